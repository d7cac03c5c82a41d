//! flowhost's default projection: canonical view, lineage and root view of one reference.
//!
//! - The payload is flattened to dotted paths; an array is several values on one path
//!   (objects inside it continue the path); `null` and empty arrays assert nothing.
//! - Canonical: each path → its distinct values in intake order. Strings compare trimmed
//!   and case-insensitively, and the first spelling is kept as sent; numbers compare by
//!   value; a string never equals a number.
//! - Lineage: path → a list with one entry per canonical value, in the canonical order:
//!   `{"value": <the kept value>, "sources": ["system/adapter/external id", …]}`, sources
//!   in intake order. A string `"1"` and a number `1` are two entries, each with its own
//!   sources.
//! - Root: one value per path, chosen by the path's [`Policy`]; the chosen record's own
//!   value, as sent (one value stays a scalar, an array stays a list).
//!
//! [`Projector`] accumulates records in any order and can merge with another projector:
//! the result depends only on the set of records, never on how they were batched.

use crate::{Group, KeyedRecord, ParentLink, PathPolicy, Policy, Projection};
use flowhost_json::Decimal;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap as StdHashMap;

/// The projection's own maps: keyed by paths, values and source labels that are hashed
/// many times per record. foldhash is several times faster than the standard SipHash, and
/// still seeded per map.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Projects one group with the given policies.
pub fn project(group: &Group, policies: &[PathPolicy]) -> Projection {
    let mut projector = Projector::new(policies);
    for record in &group.records {
        projector.add(record);
    }
    projector.finish()
}

/// Where a value was first seen: (intake sequence, position within the record).
type Seen = (u64, u32);

/// Values that compare equal under the canonical rules share a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Distinct {
    Str(String),
    /// A number by its exact decimal value (`1` = `1.0` = `1e0`).
    Num(Decimal),
    /// A number that cannot be compared exactly (intake refuses them): by its text.
    NumText(String),
    Bool(bool),
}

fn distinct(value: &Value) -> Distinct {
    match value {
        Value::String(s) => Distinct::Str(s.trim().to_lowercase()),
        Value::Bool(b) => Distinct::Bool(*b),
        Value::Number(n) => match Decimal::of(n) {
            Some(d) => Distinct::Num(d),
            None => Distinct::NumText(n.to_string()),
        },
        // Objects, arrays and nulls never reach here: flattening removes them.
        other => Distinct::Str(other.to_string()),
    }
}

/// The order used by `max` and `min`: booleans < numbers < strings; numbers by exact
/// value, strings by their trimmed lower-case text, then by spelling.
fn value_order(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Bool(_) => 0,
            Value::Number(_) => 1,
            _ => 2,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Decimal::of(x), Decimal::of(y)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => x.to_string().cmp(&y.to_string()),
        },
        (Value::String(x), Value::String(y)) => x
            .trim()
            .to_lowercase()
            .cmp(&y.trim().to_lowercase())
            .then_with(|| x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Flattens a payload into (path, scalar value, reached through an array) in document order.
pub fn flatten(payload: &Map<String, Value>) -> Vec<(String, Value, bool)> {
    flatten_members(payload.iter().map(|(key, value)| (key.as_str(), value)))
}

/// [`flatten`] over an object's members, however they are held (a map, or a lazily parsed
/// [`crate::Payload`], whose top-level map is then never built).
fn flatten_members<'a>(
    members: impl Iterator<Item = (&'a str, &'a Value)>,
) -> Vec<(String, Value, bool)> {
    fn walk(path: &str, value: &Value, in_array: bool, out: &mut Vec<(String, Value, bool)>) {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, child) in map {
                    walk(&join(path, key), child, in_array, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(path, item, true, out);
                }
            }
            scalar => out.push((path.to_string(), scalar.clone(), in_array)),
        }
    }
    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_string()
        } else {
            [path, ".", key].concat()
        }
    }
    let mut out = Vec::new();
    for (key, value) in members {
        walk(key, value, false, &mut out);
    }
    out
}

#[derive(Debug, Clone)]
struct ValueState {
    first: Seen,
    kept: Value,
    /// Source label → the first sequence at which it asserted this value.
    sources: HashMap<String, u64>,
}

/// How a root candidate ranks against others of the same path.
#[derive(Debug, Clone)]
enum Rank {
    /// Lower is better (`last`, `first`, `coalesce` build their own tuple).
    Ordered((i64, i64, i64)),
    /// `max` (true) or `min` (false) by [`value_order`].
    Extreme(bool),
}

/// A record's own value at a path, with the facts the root policies rank it by.
#[derive(Debug, Clone)]
struct Candidate {
    rank: Rank,
    seq: u64,
    value: Value,
}

impl Candidate {
    /// Ties go to the earlier intake, which keeps the choice deterministic.
    fn better_than(&self, other: &Candidate) -> bool {
        match (&self.rank, &other.rank) {
            (Rank::Ordered(a), Rank::Ordered(b)) => (a, self.seq) < (b, other.seq),
            (Rank::Extreme(max), _) => match value_order(&self.value, &other.value) {
                Ordering::Equal => self.seq < other.seq,
                Ordering::Greater => *max,
                Ordering::Less => !*max,
            },
            // Both candidates of one path always come from one policy.
            (Rank::Ordered(_), Rank::Extreme(_)) => false,
        }
    }
}

#[derive(Debug, Clone)]
struct PathState {
    first: Seen,
    values: HashMap<Distinct, ValueState>,
    root: Option<Candidate>,
}

/// Accumulates records of one reference, in any order, into its views.
#[derive(Debug, Clone)]
pub struct Projector<'p> {
    policies: &'p [PathPolicy],
    paths: HashMap<String, PathState>,
    /// The latest record's (occurred, seq) and parents.
    latest: Option<((i64, u64), Vec<ParentLink>)>,
}

impl<'p> Projector<'p> {
    /// A projector with no records and the given policies (paths not listed use `last`).
    pub fn new(policies: &'p [PathPolicy]) -> Self {
        Self {
            policies,
            paths: HashMap::default(),
            latest: None,
        }
    }

    fn policy(&self, path: &str) -> &'p Policy {
        self.policies
            .iter()
            .find(|p| p.path == path)
            .map(|p| &p.policy)
            .unwrap_or(&Policy::Last)
    }

    /// Adds one keyed record.
    pub fn add(&mut self, keyed: &KeyedRecord) {
        let record = &keyed.record;
        let seq = record.seq;
        let label = record.source_label();
        let stamp = (record.occurred_micros, seq);
        if self.latest.as_ref().is_none_or(|(best, _)| stamp > *best) {
            self.latest = Some((stamp, keyed.parents.clone()));
        }

        // Group this record's values by path, keeping document order.
        let mut by_path: Vec<(String, Vec<Value>, bool)> = Vec::new();
        for (path, value, in_array) in flatten_members(record.payload.iter()) {
            match by_path.iter_mut().find(|(p, _, _)| *p == path) {
                Some((_, values, arr)) => {
                    values.push(value);
                    *arr |= in_array;
                }
                None => by_path.push((path, vec![value], in_array)),
            }
        }

        let mut pos: u32 = 0;
        for (path, values, in_array) in by_path {
            let policy = self.policy(&path);
            let state = self.paths.entry(path).or_insert_with(|| PathState {
                first: (seq, pos),
                values: HashMap::default(),
                root: None,
            });
            state.first = state.first.min((seq, pos));
            for value in &values {
                let seen = (seq, pos);
                pos += 1;
                let entry = state
                    .values
                    .entry(distinct(value))
                    .or_insert_with(|| ValueState {
                        first: seen,
                        kept: value.clone(),
                        sources: HashMap::default(),
                    });
                if seen < entry.first {
                    entry.first = seen;
                    entry.kept = value.clone();
                }
                let s = entry.sources.entry(label.clone()).or_insert(seq);
                *s = (*s).min(seq);
            }
            for candidate in candidates(policy, record, values, in_array) {
                offer(&mut state.root, candidate);
            }
        }
    }

    /// Merges another projector's records into this one (both must use the same policies).
    pub fn merge(&mut self, other: Projector<'_>) {
        if let Some((stamp, parents)) = other.latest
            && self.latest.as_ref().is_none_or(|(best, _)| stamp > *best)
        {
            self.latest = Some((stamp, parents));
        }
        for (path, theirs) in other.paths {
            match self.paths.get_mut(&path) {
                None => {
                    self.paths.insert(path, theirs);
                }
                Some(ours) => {
                    ours.first = ours.first.min(theirs.first);
                    for (key, value) in theirs.values {
                        match ours.values.get_mut(&key) {
                            None => {
                                ours.values.insert(key, value);
                            }
                            Some(mine) => {
                                if value.first < mine.first {
                                    mine.first = value.first;
                                    mine.kept = value.kept;
                                }
                                for (label, seq) in value.sources {
                                    let s = mine.sources.entry(label).or_insert(seq);
                                    *s = (*s).min(seq);
                                }
                            }
                        }
                    }
                    if let Some(candidate) = theirs.root {
                        offer(&mut ours.root, candidate);
                    }
                }
            }
        }
    }

    /// The views of the records added so far.
    pub fn finish(self) -> Projection {
        let mut paths: Vec<(String, PathState)> = self.paths.into_iter().collect();
        paths.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));

        let mut canonical = Map::new();
        let mut lineage = Map::new();
        let mut root = Map::new();
        for (path, state) in paths {
            let mut values: Vec<ValueState> = state.values.into_values().collect();
            values.sort_by_key(|v| v.first);
            let mut path_lineage = Vec::with_capacity(values.len());
            for v in &values {
                let mut sources: Vec<(&String, &u64)> = v.sources.iter().collect();
                sources.sort_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)));
                let sources = sources
                    .into_iter()
                    .map(|(label, _)| Value::String(label.clone()))
                    .collect();
                let mut entry = Map::new();
                entry.insert("value".into(), v.kept.clone());
                entry.insert("sources".into(), Value::Array(sources));
                path_lineage.push(Value::Object(entry));
            }
            canonical.insert(
                path.clone(),
                Value::Array(values.into_iter().map(|v| v.kept).collect()),
            );
            lineage.insert(path.clone(), Value::Array(path_lineage));
            if let Some(candidate) = state.root {
                root.insert(path, candidate.value);
            }
        }
        Projection {
            canonical,
            lineage,
            root,
            parents: self.latest.map(|(_, p)| p).unwrap_or_default(),
        }
    }
}

fn offer(slot: &mut Option<Candidate>, candidate: Candidate) {
    if slot.as_ref().is_none_or(|best| candidate.better_than(best)) {
        *slot = Some(candidate);
    }
}

/// The candidates a record offers for a path's root value under a policy.
fn candidates(
    policy: &Policy,
    record: &crate::Record,
    values: Vec<Value>,
    in_array: bool,
) -> Vec<Candidate> {
    let seq = record.seq;
    let as_sent = || {
        if in_array || values.len() > 1 {
            Value::Array(values.clone())
        } else {
            values[0].clone()
        }
    };
    match policy {
        Policy::Last => vec![Candidate {
            rank: Rank::Ordered((-record.occurred_micros, -(seq as i64), 0)),
            seq,
            value: as_sent(),
        }],
        Policy::First => vec![Candidate {
            rank: Rank::Ordered((record.occurred_micros, seq as i64, 0)),
            seq,
            value: as_sent(),
        }],
        Policy::Coalesce(order) => {
            let rank = order
                .iter()
                .position(|s| *s == record.source.system)
                .unwrap_or(order.len()) as i64;
            vec![Candidate {
                rank: Rank::Ordered((rank, -record.occurred_micros, -(seq as i64))),
                seq,
                value: as_sent(),
            }]
        }
        // max and min compete value by value.
        Policy::Max | Policy::Min => values
            .into_iter()
            .map(|value| Candidate {
                rank: Rank::Extreme(*policy == Policy::Max),
                seq,
                value,
            })
            .collect(),
    }
}
