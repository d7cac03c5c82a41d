//! The circuit breaker: a plugin whose calls keep failing is rested instead of burning CPU.
//!
//! Each (stage, model) counts its batches in which the plugin failed on every record (after
//! the failing records were narrowed down, so a few poison records never count). After
//! `failed_batches` such batches in a row the stage cools down: it takes no batches (records
//! wait in the queue, nothing is parked) for `cool_down`, doubling on every trip up to
//! `max_cool_down`. The first batch after a cool-down is the trial: a success closes the
//! breaker, a failure opens it again. A new plugin version closes it at once.

use flowhost_store::Stage;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// When the breaker trips and how long it rests.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failed_batches: u32,
    pub cool_down: Duration,
    pub max_cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failed_batches: 3,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(300),
        }
    }
}

/// A stage of a model whose breaker is open or counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    pub stage: Stage,
    pub model: String,
    /// The plugin version that failed.
    pub version: String,
    /// Wholly failed batches in a row.
    pub failed_batches: u32,
    /// Until when the stage rests, if it does.
    pub cooling_until: Option<SystemTime>,
    pub last_error: String,
}

#[derive(Debug, Clone)]
struct Entry {
    version: String,
    failed_batches: u32,
    trips: u32,
    open_until: Option<Instant>,
    last_error: String,
}

/// What a batch's outcome did to the breaker (for the caller to report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    /// Tripped: rests for this long.
    Opened(Duration),
    /// A success after failures: closed again.
    Closed,
}

#[derive(Default)]
pub(crate) struct Breakers {
    config: BreakerConfig,
    map: Mutex<HashMap<(Stage, String), Entry>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the stage may take a batch with this plugin version now.
    pub fn allows(&self, stage: Stage, model: &str, version: &str) -> bool {
        let mut map = self.map.lock().expect("breakers");
        let key = (stage, model.to_string());
        match map.get(&key) {
            None => true,
            Some(e) if e.version != version => {
                map.remove(&key); // a new version gets a fresh start
                true
            }
            Some(e) => e.open_until.is_none_or(|t| Instant::now() >= t),
        }
    }

    /// Records a batch's outcome: `items` handled, `failed` of them failed in the plugin.
    pub fn record(
        &self,
        stage: Stage,
        model: &str,
        version: &str,
        items: usize,
        failed: usize,
        error: Option<&str>,
    ) -> Change {
        let mut map = self.map.lock().expect("breakers");
        let key = (stage, model.to_string());
        if items == 0 || failed < items {
            return match map.remove(&key) {
                Some(e) if e.trips > 0 => Change::Closed,
                _ => Change::None,
            };
        }
        let entry = map.entry(key).or_insert_with(|| Entry {
            version: version.to_string(),
            failed_batches: 0,
            trips: 0,
            open_until: None,
            last_error: String::new(),
        });
        if entry.version != version {
            *entry = Entry {
                version: version.to_string(),
                failed_batches: 0,
                trips: 0,
                open_until: None,
                last_error: String::new(),
            };
        }
        entry.failed_batches += 1;
        entry.last_error = error.unwrap_or_default().to_string();
        if entry.failed_batches < self.config.failed_batches {
            return Change::None;
        }
        let rest = self
            .config
            .cool_down
            .saturating_mul(1 << entry.trips.min(16))
            .min(self.config.max_cool_down);
        entry.trips += 1;
        entry.open_until = Some(Instant::now() + rest);
        Change::Opened(rest)
    }

    /// Stages that are cooling down or counting failures.
    pub fn status(&self) -> Vec<BreakerStatus> {
        let map = self.map.lock().expect("breakers");
        let now = Instant::now();
        let mut out: Vec<BreakerStatus> = map
            .iter()
            .map(|((stage, model), e)| BreakerStatus {
                stage: *stage,
                model: model.clone(),
                version: e.version.clone(),
                failed_batches: e.failed_batches,
                cooling_until: e
                    .open_until
                    .filter(|t| *t > now)
                    .map(|t| SystemTime::now() + (t - now)),
                last_error: e.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| (&a.model, a.stage.as_str()).cmp(&(&b.model, b.stage.as_str())));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerConfig {
            failed_batches: 2,
            cool_down: Duration::from_secs(60),
            max_cool_down: Duration::from_secs(600),
        })
    }

    #[test]
    fn trips_after_wholly_failed_batches_and_a_new_version_resets() {
        let b = breakers();
        let s = Stage::Associate;
        assert_eq!(b.record(s, "m", "v1", 10, 10, Some("trap")), Change::None);
        assert!(b.allows(s, "m", "v1"));
        assert_eq!(
            b.record(s, "m", "v1", 10, 10, Some("trap")),
            Change::Opened(Duration::from_secs(60))
        );
        assert!(!b.allows(s, "m", "v1"));
        assert!(!b.allows(Stage::Associate, "m", "v1"));
        assert!(b.allows(Stage::Project, "m", "v1"), "stages are separate");
        assert_eq!(b.status()[0].last_error, "trap");
        assert!(b.allows(s, "m", "v2"), "a new version starts afresh");
        assert!(b.status().is_empty());
    }

    #[test]
    fn poison_records_do_not_count_and_success_closes() {
        let b = breakers();
        let s = Stage::Project;
        for _ in 0..5 {
            assert_eq!(b.record(s, "m", "v1", 10, 3, Some("trap")), Change::None);
        }
        assert!(b.allows(s, "m", "v1"));
        b.record(s, "m", "v1", 1, 1, None);
        b.record(s, "m", "v1", 1, 1, None);
        assert!(!b.allows(s, "m", "v1"));
        assert_eq!(b.record(s, "m", "v1", 4, 0, None), Change::Closed);
        assert!(b.allows(s, "m", "v1"));
    }

    #[test]
    fn cool_down_doubles_up_to_the_cap() {
        let b = breakers();
        let s = Stage::Associate;
        let mut rests = Vec::new();
        for _ in 0..6 {
            if let Change::Opened(d) = b.record(s, "m", "v1", 1, 1, None) {
                rests.push(d.as_secs());
            }
        }
        assert_eq!(rests, vec![60, 120, 240, 480, 600]);
    }
}
