//! Shadow runs: a candidate version of a model's plugin called on the batches the live
//! version decides, after the live commit and off its path, writing nothing to the live
//! tables. What it would do differently is recorded in the shadow tables.
//!
//! **Bounded so live work does not wait for it.** After a live association batch commits,
//! its records and the live plugin's answers are offered to a queue of
//! [`SHADOW_QUEUE`] batches with `try_send`: a full queue drops the batch (its records count
//! as skipped), so a live batch never waits on the shadow. One shadow task per process takes
//! the batches one at a time; its plugin calls run on the blocking pool under the
//! candidate's own limits and an isolation budget, and its writes are one small
//! transaction per batch in the shadow tables. It does use CPU beside the live stages, one
//! batch at a time.
//!
//! **What is compared.** For every record: the keys and parents each version names, and
//! the decision each leads to (keyed to which reference, attached, parked and why,
//! rejected, failed), both decided against the same live key index plus the keys each
//! claims earlier in the same batch (the candidate's claims are not kept between batches:
//! nothing of it is written). For every live reference the batch touched: the canonical and
//! root views each version projects from the same (live) group.

use crate::isolate::{self, Slot};
use flowhost_core::association::{self, Outcome};
use flowhost_core::{Association, Group, Kind, ParentKey, Record};
use flowhost_runtime::{CallError, Plugin, PluginSet};
use flowhost_store::{ShadowCounts, ShadowDiff, Store, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Live batches waiting for the shadow task; more are skipped.
pub const SHADOW_QUEUE: usize = 8;

/// How long narrowing down a candidate's failures may take per batch and side.
const SHADOW_BUDGET: Duration = Duration::from_secs(10);

/// A live batch offered to the shadow.
pub(crate) struct ShadowBatch {
    live: Plugin,
    candidate: Plugin,
    records: Vec<Record>,
    live_results: Vec<Result<Association, CallError>>,
}

/// The candidates and the queue to their task.
pub(crate) struct Shadows {
    plugins: PluginSet,
    queue: mpsc::Sender<ShadowBatch>,
    rx: Mutex<Option<mpsc::Receiver<ShadowBatch>>>,
    /// Whether the shadow task runs (`Engine::serve`); until then nothing is offered.
    running: std::sync::atomic::AtomicBool,
    /// Records of batches the full queue dropped, per (model, candidate version), added to
    /// the run's count with its next compared batch.
    skipped: Mutex<HashMap<(String, String), i64>>,
}

impl Shadows {
    pub fn new(plugins: PluginSet) -> Self {
        let (queue, rx) = mpsc::channel(SHADOW_QUEUE);
        Self {
            plugins,
            queue,
            rx: Mutex::new(Some(rx)),
            running: Default::default(),
            skipped: Mutex::default(),
        }
    }

    /// Offers a committed live batch to the model's candidate, if it has one (never waits).
    pub fn offer(
        &self,
        live: &Plugin,
        records: &[Record],
        live_results: &[Result<Association, CallError>],
    ) {
        if !self.running.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let model = &live.description().model;
        let Some(candidate) = self.plugins.get(model) else {
            return;
        };
        if candidate.version() == live.version() || records.is_empty() {
            return;
        }
        let batch = ShadowBatch {
            live: live.clone(),
            candidate: candidate.clone(),
            records: records.to_vec(),
            live_results: live_results.to_vec(),
        };
        if self.queue.try_send(batch).is_err() {
            let mut skipped = self.skipped.lock().expect("shadow skipped");
            let n = skipped
                .entry((model.clone(), candidate.version().to_string()))
                .or_default();
            if *n == 0 {
                tracing::warn!(
                    model = %model,
                    "shadow run falls behind the live stage: live batches are skipped (counted in the run) until it catches up"
                );
            }
            *n += records.len() as i64;
        }
    }

    /// Compares the offered batches until `cancel` fires (once per engine).
    pub async fn run(&self, store: Store, cancel: tokio_util::sync::CancellationToken) {
        let Some(mut rx) = self.rx.lock().expect("shadow queue").take() else {
            return;
        };
        self.running
            .store(true, std::sync::atomic::Ordering::Relaxed);
        loop {
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                batch = rx.recv() => match batch { Some(b) => b, None => return },
            };
            let model = batch.live.description().model.clone();
            let version = batch.candidate.version().to_string();
            // A candidate replaced since the batch was offered is not compared any more.
            if self
                .plugins
                .get(&model)
                .is_none_or(|c| c.version() != version)
            {
                continue;
            }
            let offered = batch.records.len();
            let compared = compare(
                &store,
                &batch.live,
                &batch.candidate,
                batch.records,
                Some(batch.live_results),
            )
            .await;
            let mut found = match compared {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(model, "shadow run: the batch could not be compared: {e}");
                    Comparison::skipped(offered)
                }
            };
            found.counts.skipped += self
                .skipped
                .lock()
                .expect("shadow skipped")
                .remove(&(model.clone(), version.clone()))
                .unwrap_or(0);
            match store
                .add_shadow(&model, &version, &found.counts, &found.diffs)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::debug!(model, "shadow run ended; a compared batch dropped"),
                Err(e) => tracing::warn!(model, "shadow run: cannot record a batch: {e}"),
            }
        }
    }
}

/// What comparing one batch found.
#[derive(Debug, Default)]
pub struct Comparison {
    pub counts: ShadowCounts,
    pub diffs: Vec<ShadowDiff>,
}

impl Comparison {
    fn skipped(records: usize) -> Self {
        Comparison {
            counts: ShadowCounts {
                skipped: records as i64,
                ..Default::default()
            },
            diffs: Vec::new(),
        }
    }

    /// Adds another batch's findings.
    pub fn add(&mut self, other: Comparison) {
        let (a, b) = (&mut self.counts, other.counts);
        a.batches += b.batches;
        a.records += b.records;
        a.skipped += b.skipped;
        a.record_diffs += b.record_diffs;
        a.views += b.views;
        a.view_diffs += b.view_diffs;
        self.diffs.extend(other.diffs);
    }
}

/// One side's answer for a record.
type Answer = Option<Result<Association, String>>;

/// Calls `call` on `items` on the blocking pool, isolating failures within `budget`.
async fn isolated<T, R>(
    items: Vec<T>,
    call: impl Fn(&[T]) -> isolate::CallResult<R> + Send + 'static,
    budget: Duration,
) -> (Vec<T>, Vec<Slot<R>>)
where
    T: Send + 'static,
    R: Send + 'static,
{
    let n = items.len();
    let deadline = Instant::now() + budget;
    tokio::task::spawn_blocking(move || {
        let isolated = isolate::isolate(&items, &call, deadline);
        (items, isolated.slots)
    })
    .await
    .unwrap_or_else(|_| (Vec::new(), (0..n).map(|_| Slot::Wait).collect()))
}

fn answers(slots: Vec<Slot<Association>>) -> Vec<Answer> {
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Done(a) => Some(Ok(a)),
            Slot::Failed(e) => Some(Err(e.to_string())),
            Slot::Wait => None,
        })
        .collect()
}

/// Compares a candidate with the live version on a batch of one model's records (intake
/// order): both decided against the live key index, then both views of every live reference
/// the records belong to. `live_results` are the live version's answers when it has just
/// given them (a live batch); without them it is called too (a replay).
pub async fn compare(
    store: &Store,
    live: &Plugin,
    candidate: &Plugin,
    records: Vec<Record>,
    live_results: Option<Vec<Result<Association, CallError>>>,
) -> Result<Comparison, StoreError> {
    let c = candidate.clone();
    let (records, cand_slots) =
        isolated(records, move |r: &[Record]| c.associate(r), SHADOW_BUDGET).await;
    let live_answers: Vec<Answer> = match live_results {
        Some(results) => results
            .into_iter()
            .map(|r| Some(r.map_err(|e| e.to_string())))
            .collect(),
        None => {
            let l = live.clone();
            let slots = isolated(
                records.clone(),
                move |r: &[Record]| l.associate(r),
                SHADOW_BUDGET,
            )
            .await
            .1;
            answers(slots)
        }
    };
    let cand_answers = answers(cand_slots);

    // Records both sides answered are compared; the rest are skipped.
    let both: Vec<usize> = (0..records.len())
        .filter(|&i| live_answers[i].is_some() && cand_answers[i].is_some())
        .collect();
    let mut found = Comparison::default();
    found.counts.batches = 1;
    found.counts.records = both.len() as i64;
    found.counts.skipped = (records.len() - both.len()) as i64;
    if both.is_empty() {
        return Ok(found);
    }
    let records: Vec<Record> = both.iter().map(|&i| records[i].clone()).collect();
    let pick = |answers: Vec<Answer>| -> Vec<Result<Association, String>> {
        let mut answers: Vec<Option<Answer>> = answers.into_iter().map(Some).collect();
        both.iter()
            .map(|&i| answers[i].take().flatten().expect("answered"))
            .collect()
    };
    let (live_answers, cand_answers) = (pick(live_answers), pick(cand_answers));

    let model = live.description().model.as_str();
    // Each version decides as the kind it describes.
    let (kind, cand_kind) = (live.description().kind, candidate.description().kind);
    let mut own = BTreeSet::new();
    let mut parents = BTreeSet::new();
    for (answers, kind) in [(&live_answers, kind), (&cand_answers, cand_kind)] {
        let (ok_records, ok_assocs) = ok_part(&records, answers);
        let (o, p) = association::lookups(kind, &ok_records, &ok_assocs);
        own.extend(o);
        parents.extend(p);
    }
    let own: Vec<String> = own.into_iter().collect();
    let parents: Vec<ParentKey> = parents.into_iter().collect();
    let owners = store.lookup_keys(model, &own).await?;
    let parent_owners = store.lookup_parents(&parents).await?;

    let live_sides = decide_side(
        model,
        kind,
        &records,
        &live_answers,
        &owners,
        &parent_owners,
    );
    let cand_sides = decide_side(
        model,
        cand_kind,
        &records,
        &cand_answers,
        &owners,
        &parent_owners,
    );

    let live_version = live.version().to_string();
    let mut touched = BTreeSet::new();
    for (i, record) in records.iter().enumerate() {
        let (l, c) = (&live_sides[i], &cand_sides[i]);
        if let Some(reference) = &l.existing_reference {
            touched.insert(reference.clone());
        }
        if l.json == c.json {
            continue;
        }
        found.counts.record_diffs += 1;
        let summary = format!(
            "record {}/{}: {}",
            record.source.system,
            record.external_id,
            describe_change(l, c)
        );
        found.diffs.push(ShadowDiff {
            live_version: live_version.clone(),
            kind: "record".into(),
            seq: Some(record.seq),
            system: Some(record.source.system.clone()),
            external_id: Some(record.external_id.clone()),
            reference: l.existing_reference.clone(),
            summary,
            live: l.json.to_string(),
            candidate: c.json.to_string(),
        });
    }

    if kind == Kind::Entity && !touched.is_empty() {
        let references: Vec<String> = touched.into_iter().collect();
        let groups = store.groups(model, &references).await?;
        let views = compare_views(live, candidate, groups).await;
        found.counts.views = views.compared as i64;
        found.counts.view_diffs = views.diffs.len() as i64;
        found.diffs.extend(views.diffs);
    }
    Ok(found)
}

/// The records a side answered with an association, and those associations.
fn ok_part(
    records: &[Record],
    answers: &[Result<Association, String>],
) -> (Vec<Record>, Vec<Association>) {
    records
        .iter()
        .zip(answers)
        .filter_map(|(r, a)| a.as_ref().ok().map(|a| (r.clone(), a.clone())))
        .unzip()
}

/// One side's decision for a record, as compared.
struct Side {
    /// Keys the side named (sorted).
    keys: Vec<String>,
    /// The reference it is keyed to when that reference exists already.
    existing_reference: Option<String>,
    /// Keys, parents and decision, as shown.
    json: serde_json::Value,
}

/// Decides one side's answers against the live owners. References minted in the batch are
/// named by the first record that minted them, so the two sides' new references compare by
/// what they group, not by a random id.
fn decide_side(
    model: &str,
    kind: Kind,
    records: &[Record],
    answers: &[Result<Association, String>],
    owners: &HashMap<String, String>,
    parent_owners: &HashMap<ParentKey, String>,
) -> Vec<Side> {
    let (ok_records, ok_assocs) = ok_part(records, answers);
    let mut minted = 0usize;
    let mut mint = || {
        minted += 1;
        format!("\u{0}new-{minted}")
    };
    let decision = association::decide(
        model,
        kind,
        &ok_records,
        &ok_assocs,
        owners,
        parent_owners,
        &mut mint,
    );
    // A minted reference is named after the record that minted it.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (record, outcome) in ok_records.iter().zip(&decision.outcomes) {
        if let Outcome::Keyed {
            reference,
            minted: true,
            ..
        } = outcome
        {
            names.entry(reference.clone()).or_insert_with(|| {
                format!(
                    "a new reference (first record {}/{})",
                    record.source.system, record.external_id
                )
            });
        }
    }
    let name = |reference: &str| {
        names
            .get(reference)
            .cloned()
            .unwrap_or(reference.to_string())
    };
    let mut outcomes = decision.outcomes.into_iter();
    answers
        .iter()
        .map(|answer| match answer {
            Err(error) => Side {
                keys: Vec::new(),
                existing_reference: None,
                json: serde_json::json!({ "decision": "failed", "error": error }),
            },
            Ok(association) => {
                let outcome = outcomes.next().expect("one outcome per associated record");
                let (keys, parents) = match association {
                    Association::Keyed { keys, parents } => {
                        let mut keys = keys.clone();
                        keys.sort();
                        let parents: Vec<String> =
                            parents.iter().map(|p| format!("{}:{}", p.model, p.key)).collect();
                        (keys, parents)
                    }
                    Association::Rejected { .. } => (Vec::new(), Vec::new()),
                };
                let (json, existing_reference) = match (&outcome, association) {
                    (_, Association::Rejected { code, message }) => (
                        serde_json::json!({ "decision": "rejected", "code": code, "message": message }),
                        None,
                    ),
                    (Outcome::Keyed { reference, minted, parents: links }, _) => (
                        serde_json::json!({
                            "decision": "keyed",
                            "reference": name(reference),
                            "keys": keys,
                            "parents": links.iter().map(|l| format!("{}/{}", l.model, l.reference)).collect::<Vec<_>>(),
                        }),
                        (!minted).then(|| reference.clone()),
                    ),
                    (Outcome::Attached { parents: links }, _) => (
                        serde_json::json!({
                            "decision": "attached",
                            "parents": links.iter().map(|l| format!("{}/{}", l.model, l.reference)).collect::<Vec<_>>(),
                        }),
                        None,
                    ),
                    (Outcome::Parked { reason, details, .. }, _) => (
                        serde_json::json!({
                            "decision": "parked",
                            "reason": reason.as_str(),
                            "details": details,
                            "keys": keys,
                            "parents": parents,
                        }),
                        None,
                    ),
                };
                Side {
                    keys,
                    existing_reference,
                    json,
                }
            }
        })
        .collect()
}

/// "keys [a] → [b]; keyed to X → parked NO_KEYS".
fn describe_change(live: &Side, candidate: &Side) -> String {
    let mut parts = Vec::new();
    if live.keys != candidate.keys {
        parts.push(format!(
            "keys [{}] → [{}]",
            live.keys.join(", "),
            candidate.keys.join(", ")
        ));
    }
    let (l, c) = (decision_text(&live.json), decision_text(&candidate.json));
    if l != c {
        parts.push(format!("{l} → {c}"));
    }
    if parts.is_empty() {
        parts.push("parents differ".into());
    }
    parts.join("; ")
}

fn decision_text(json: &serde_json::Value) -> String {
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).unwrap_or("?");
    match field("decision") {
        "keyed" => format!("keyed to {}", field("reference")),
        "attached" => "attached".into(),
        "parked" => format!("parked {} ({})", field("reason"), field("details")),
        "rejected" => format!("rejected {}", field("code")),
        _ => format!("failed ({})", field("error")),
    }
}

struct ViewComparison {
    compared: usize,
    diffs: Vec<ShadowDiff>,
}

/// Both versions' views of the same live groups.
async fn compare_views(live: &Plugin, candidate: &Plugin, groups: Vec<Group>) -> ViewComparison {
    let references: Vec<String> = groups.iter().map(|g| g.reference.clone()).collect();
    let l = live.clone();
    let (groups, live_slots) =
        isolated(groups, move |g: &[Group]| l.project(g), SHADOW_BUDGET).await;
    let c = candidate.clone();
    let (_, cand_slots) = isolated(groups, move |g: &[Group]| c.project(g), SHADOW_BUDGET).await;
    let view = |slot: &Slot<flowhost_core::Projection>| match slot {
        Slot::Done(p) => Some(serde_json::json!({
            "canonical": parse(&p.canonical),
            "root": parse(&p.root),
        })),
        Slot::Failed(e) => Some(serde_json::json!({ "failed": e.to_string() })),
        Slot::Wait => None,
    };
    let mut out = ViewComparison {
        compared: 0,
        diffs: Vec::new(),
    };
    for (i, reference) in references.iter().enumerate() {
        let (Some(l), Some(c)) = (
            live_slots.get(i).and_then(view),
            cand_slots.get(i).and_then(view),
        ) else {
            continue;
        };
        out.compared += 1;
        if l == c {
            continue;
        }
        out.diffs.push(ShadowDiff {
            live_version: live.version().to_string(),
            kind: "view".into(),
            reference: Some(reference.clone()),
            summary: format!("reference {reference}: {}", view_change(&l, &c)),
            live: l.to_string(),
            candidate: c.to_string(),
            ..Default::default()
        });
    }
    out
}

fn parse(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Which fields of which view differ: "canonical fields a, b; root differs".
fn view_change(live: &serde_json::Value, candidate: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    for view in ["canonical", "root"] {
        let (l, c) = (live.get(view), candidate.get(view));
        if l == c {
            continue;
        }
        match (l.and_then(|v| v.as_object()), c.and_then(|v| v.as_object())) {
            (Some(l), Some(c)) => {
                let fields: BTreeSet<&String> = l
                    .keys()
                    .chain(c.keys())
                    .filter(|k| l.get(*k) != c.get(*k))
                    .collect();
                let list: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
                parts.push(format!("{view} differs in {}", list.join(", ")));
            }
            _ => parts.push(format!("{view} differs")),
        }
    }
    if let Some(error) = candidate.get("failed").and_then(|v| v.as_str()) {
        parts = vec![format!("the candidate failed to project it: {error}")];
    } else if let Some(error) = live.get("failed").and_then(|v| v.as_str()) {
        parts = vec![format!("the live version failed to project it: {error}")];
    }
    parts.join("; ")
}
