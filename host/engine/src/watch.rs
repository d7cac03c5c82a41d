//! A new plugin version's first records, watched. When a model's association starts
//! committing outcomes of another version (a file dropped in, a promotion, a rollback, a
//! version another host made current), the outcomes this process saw of the version before
//! become the baseline, and the new version's first `records` outcomes are compared with it:
//! when its share of records that failed in the plugin (`PLUGIN_FAILED`) or were rejected
//! (`REJECTED`) is clearly worse — at least [`MIN_INCREASE`] more of them, and at least twice
//! the baseline's share — a [`Verdict`] is sent, and whoever owns the plugins (`serve`) rolls
//! the model back to the version before.
//!
//! Only what this process decided counts, in memory: a baseline needs at least a quarter of
//! `records` outcomes of the version before, so a host that just started, or that saw too
//! little of the version before, does not judge.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// "Clearly worse": at least this much more of the records failed or were rejected…
pub const MIN_INCREASE: f64 = 0.10;
/// …and at least this many times the baseline's share.
pub const MIN_RATIO: f64 = 2.0;

/// A version judged worse than the one before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub model: String,
    /// The version judged.
    pub version: String,
    /// The version before it, to roll back to.
    pub previous: String,
    /// Records of the new version judged, and how many failed or were rejected.
    pub records: usize,
    pub failed: usize,
    /// The same of the version before (its last outcomes this process saw).
    pub baseline_records: usize,
    pub baseline_failed: usize,
}

impl Verdict {
    /// Why, in a sentence.
    pub fn describe(&self) -> String {
        let pct = |f: usize, n: usize| 100.0 * f as f64 / n.max(1) as f64;
        format!(
            "{} of its first {} records failed or were rejected ({:.0}%), against {} of {} ({:.0}%) under version {}",
            self.failed,
            self.records,
            pct(self.failed, self.records),
            self.baseline_failed,
            self.baseline_records,
            pct(self.baseline_failed, self.baseline_records),
            short(&self.previous)
        )
    }
}

fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

struct Track {
    version: String,
    /// The last outcomes of `version` (true: failed or rejected), at most `records`.
    recent: VecDeque<bool>,
    /// The version before and its last outcomes, while `version` is being judged.
    baseline: Option<(String, Vec<bool>)>,
}

pub(crate) struct Watcher {
    /// Outcomes judged per new version; 0: no watching.
    records: usize,
    models: Mutex<HashMap<String, Track>>,
    verdicts: tokio::sync::mpsc::UnboundedSender<Verdict>,
    verdicts_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Verdict>>>,
}

impl Watcher {
    pub(crate) fn new(records: usize) -> Self {
        let (verdicts, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            records,
            models: Mutex::new(HashMap::new()),
            verdicts,
            verdicts_rx: Mutex::new(Some(rx)),
        }
    }

    pub(crate) fn take_verdicts(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Verdict>> {
        self.verdicts_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The outcomes of a committed batch of `model` under `version` (true: the record failed
    /// in the plugin or was rejected), in order.
    pub(crate) fn record(
        &self,
        model: &str,
        version: &str,
        outcomes: impl IntoIterator<Item = bool>,
    ) {
        let n = self.records;
        if n == 0 {
            return;
        }
        let mut models = self.models.lock().unwrap_or_else(|e| e.into_inner());
        let track = models.entry(model.to_string()).or_insert_with(|| Track {
            version: version.to_string(),
            recent: VecDeque::new(),
            baseline: None,
        });
        if track.version != version {
            let before = std::mem::take(&mut track.recent);
            track.baseline = (before.len() >= n.div_ceil(4)).then(|| {
                (
                    std::mem::replace(&mut track.version, version.to_string()),
                    before.into(),
                )
            });
            track.version = version.to_string();
        }
        for failed in outcomes {
            track.recent.push_back(failed);
            if track.recent.len() > n {
                track.recent.pop_front();
            }
            if track.recent.len() == n
                && let Some((previous, before)) = track.baseline.take()
            {
                let failed = track.recent.iter().filter(|f| **f).count();
                let baseline_failed = before.iter().filter(|f| **f).count();
                let (rate, base) = (
                    failed as f64 / n as f64,
                    baseline_failed as f64 / before.len() as f64,
                );
                if rate - base >= MIN_INCREASE && rate >= base * MIN_RATIO {
                    let _ = self.verdicts.send(Verdict {
                        model: model.to_string(),
                        version: version.to_string(),
                        previous,
                        records: n,
                        failed,
                        baseline_records: before.len(),
                        baseline_failed,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(w: &Watcher) -> Vec<Verdict> {
        let mut rx = w.take_verdicts().unwrap();
        let mut out = Vec::new();
        while let Ok(v) = rx.try_recv() {
            out.push(v);
        }
        out
    }

    #[test]
    fn a_version_clearly_worse_than_the_one_before_is_judged_once() {
        let w = Watcher::new(30);
        w.record("device", "v1", (0..40).map(|i| i % 20 == 0)); // 5% fail
        w.record("device", "v2", (0..29).map(|i| i % 3 == 0));
        assert!(verdicts(&w).is_empty(), "not judged before 30 records");
        let w = Watcher::new(30);
        w.record("device", "v1", (0..40).map(|i| i % 20 == 0));
        w.record("device", "v2", (0..60).map(|i| i % 3 == 0)); // 33% fail
        let v = verdicts(&w);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            (v[0].previous.as_str(), v[0].failed, v[0].records),
            ("v1", 10, 30)
        );
        assert!(
            v[0].describe().contains("10 of its first 30 records"),
            "{}",
            v[0].describe()
        );
    }

    #[test]
    fn no_verdict_without_a_baseline_or_when_not_clearly_worse() {
        // A first version has nothing to compare with.
        let w = Watcher::new(30);
        w.record("device", "v1", (0..60).map(|i| i % 2 == 0));
        assert!(verdicts(&w).is_empty());
        // Too little of the version before.
        let w = Watcher::new(40);
        w.record("device", "v1", (0..5).map(|_| false));
        w.record("device", "v2", (0..60).map(|i| i % 2 == 0));
        assert!(verdicts(&w).is_empty());
        // Worse, but not by 10 points; then not twice as bad.
        let w = Watcher::new(100);
        w.record("device", "v1", (0..100).map(|i| i % 10 == 0)); // 10%
        w.record("device", "v2", (0..100).map(|i| i % 6 == 0)); // 17%
        w.record("device", "v3", (0..100).map(|i| i % 4 == 0)); // 25% vs 17%
        assert!(verdicts(&w).is_empty());
        // Off.
        let w = Watcher::new(0);
        w.record("device", "v1", (0..100).map(|_| false));
        w.record("device", "v2", (0..100).map(|_| true));
        assert!(verdicts(&w).is_empty());
    }
}
