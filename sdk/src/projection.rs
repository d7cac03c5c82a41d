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

use crate::{Group, KeyedRecord, ParentLink, PathPolicy, Policy, Projection, Views};
use flowhost_json::Decimal;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap as StdHashMap;
use std::hash::BuildHasher;

/// The projection's own maps: keyed by paths, values and source labels that are hashed
/// many times per record. foldhash is several times faster than the standard SipHash, and
/// still seeded per map.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// Projects one group with the given policies, into maps.
pub fn project(group: &Group, policies: &[PathPolicy]) -> Projection {
    projector(group, policies).finish()
}

/// Projects one group with the given policies, into the JSON text a plugin hands back (the
/// default of [`crate::Model::project`]): the text of [`project`]'s maps, written without
/// building them.
pub fn project_views(group: &Group, policies: &[PathPolicy]) -> Views {
    projector(group, policies).finish_views()
}

fn projector<'p>(group: &Group, policies: &'p [PathPolicy]) -> Projector<'p> {
    let mut projector = Projector::new(policies);
    for record in &group.records {
        projector.add(record);
    }
    projector
}

/// Where a value was first seen: (intake sequence, position within the record's flattened
/// payload).
type Seen = (u64, u32);

/// Values other than strings that compare equal under the canonical rules share a key
/// (strings are keyed by their trimmed lower-case text, see [`PathState::class_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Distinct {
    /// A number by its exact decimal value (`1` = `1.0` = `1e0`).
    Num(Decimal),
    /// A number that cannot be compared exactly (intake refuses them): by its text.
    NumText(String),
    Bool(bool),
    /// Objects, arrays and nulls never reach here (flattening removes them); kept apart
    /// from strings all the same.
    Other(String),
}

/// `text` trimmed and lower-cased, written into `out` (cleared first). ASCII text, the
/// common case, is copied and lowered in place; other text by the full Unicode rules.
fn fold_into(text: &str, out: &mut String) {
    out.clear();
    let text = text.trim();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
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
    let mut out = Vec::new();
    flatten_members(payload.iter().map(|(k, v)| (k.as_str(), v)), &mut out);
    out.into_iter()
        .map(|(path, value, in_array)| (path.into_owned(), value.clone(), in_array))
        .collect()
}

/// A flattened scalar: its path (a top-level key is borrowed, a nested path is joined), the
/// value where it stands in the payload, and whether an array was on the way to it.
type Flat<'v> = (Cow<'v, str>, &'v Value, bool);

/// [`flatten`] over an object's members, however they are held (a map, or a lazily parsed
/// [`crate::Payload`], whose top-level map is then never built), without copying values.
fn flatten_members<'v>(
    members: impl Iterator<Item = (&'v str, &'v Value)>,
    out: &mut Vec<Flat<'v>>,
) {
    fn walk<'v>(path: Cow<'v, str>, value: &'v Value, in_array: bool, out: &mut Vec<Flat<'v>>) {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (key, child) in map {
                    let joined = if path.is_empty() {
                        Cow::Borrowed(key.as_str())
                    } else {
                        Cow::Owned([&*path, ".", key].concat())
                    };
                    walk(joined, child, in_array, out);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(path.clone(), item, true, out);
                }
            }
            scalar => out.push((path, scalar, in_array)),
        }
    }
    for (key, value) in members {
        walk(Cow::Borrowed(key), value, false, out);
    }
}

/// Source labels are held once per projector; values name them by index.
type LabelId = u32;

#[derive(Debug, Clone)]
struct ValueState {
    first: Seen,
    kept: Value,
    /// Who asserted this value, and first when.
    sources: Sources,
}

/// The sources of a value: (label, the first sequence at which it asserted the value). A
/// label may be listed more than once until the list is compacted, which happens whenever
/// it has doubled since the last time: the list stays within twice the labels it holds,
/// and a record costs a push, not a hash lookup (and a value no map of its own).
#[derive(Debug, Clone, Default)]
struct Sources {
    entries: Vec<(LabelId, u64)>,
    /// The length after the last compaction.
    compacted: usize,
}

impl Sources {
    fn add(&mut self, label: LabelId, seq: u64) {
        // The same source again in a row (a record naming a value twice, or a source's
        // records one after another) needs no entry of its own.
        if let Some(last) = self.entries.last_mut()
            && last.0 == label
        {
            last.1 = last.1.min(seq);
            return;
        }
        self.entries.push((label, seq));
        if self.entries.len() > 2 * self.compacted.max(8) {
            self.compact();
        }
    }

    /// One entry per label, with its first sequence.
    fn compact(&mut self) {
        self.entries.sort_unstable();
        // Sorted by label, then sequence: the first of each label is its earliest.
        self.entries.dedup_by_key(|e| e.0);
        self.compacted = self.entries.len();
    }
}

impl ValueState {
    fn saw(&mut self, seen: Seen, value: &Value) {
        if seen < self.first {
            self.first = seen;
            self.kept = value.clone();
        }
    }

    fn asserted_by(&mut self, label: LabelId, seq: u64) {
        self.sources.add(label, seq);
    }
}

/// How a root candidate ranks against others of the same path.
#[derive(Debug, Clone)]
enum Rank {
    /// Lower is better (`last`, `first`, `coalesce` build their own tuple).
    Ordered((i64, i64, i64)),
    /// `max` (true) or `min` (false) by [`value_order`].
    Extreme(bool),
}

impl Rank {
    /// Whether a candidate of this rank, `seq` and `value` beats `other`. Ties go to the
    /// earlier intake, which keeps the choice deterministic.
    fn beats(&self, seq: u64, value: &Value, other: &Candidate) -> bool {
        match (self, &other.rank) {
            (Rank::Ordered(a), Rank::Ordered(b)) => (a, seq) < (b, other.seq),
            (Rank::Extreme(max), _) => match value_order(value, &other.value) {
                Ordering::Equal => seq < other.seq,
                Ordering::Greater => *max,
                Ordering::Less => !*max,
            },
            // Both candidates of one path always come from one policy.
            (Rank::Ordered(_), Rank::Extreme(_)) => false,
        }
    }
}

/// A record's own value at a path, with the facts the root policies rank it by.
#[derive(Debug, Clone)]
struct Candidate {
    rank: Rank,
    seq: u64,
    value: Value,
}

#[derive(Debug, Clone, Default)]
struct PathState {
    first: Seen,
    /// The distinct values, in the order this projector met them.
    values: Vec<ValueState>,
    /// Index into `values` of each string value by its trimmed lower-case text.
    strings: HashMap<String, usize>,
    /// Index into `values` of every other value by its [`Distinct`] key.
    others: HashMap<Distinct, usize>,
    root: Option<Candidate>,
}

impl PathState {
    fn new(first: Seen) -> Self {
        Self {
            first,
            ..Self::default()
        }
    }

    /// The index in `values` of the value's class (seen first at `seen` if it is new).
    /// `scratch` holds a string's folded text, so that a known string costs no allocation.
    fn class_of(&mut self, value: &Value, seen: Seen, scratch: &mut String) -> usize {
        let next = self.values.len();
        let index = match value {
            Value::String(text) => {
                fold_into(text, scratch);
                match self.strings.get(scratch.as_str()) {
                    Some(&index) => return index,
                    None => {
                        self.strings.insert(scratch.clone(), next);
                        next
                    }
                }
            }
            other => *self.others.entry(distinct(other)).or_insert(next),
        };
        if index == next {
            self.values.push(ValueState {
                first: seen,
                kept: value.clone(),
                sources: Sources::default(),
            });
        }
        index
    }
}

/// The key of a value that is not a string.
fn distinct(value: &Value) -> Distinct {
    match value {
        Value::Bool(b) => Distinct::Bool(*b),
        Value::Number(n) => match Decimal::of(n) {
            Some(d) => Distinct::Num(d),
            None => Distinct::NumText(n.to_string()),
        },
        other => Distinct::Other(other.to_string()),
    }
}

/// Accumulates records of one reference, in any order, into its views.
#[derive(Debug, Clone)]
pub struct Projector<'p> {
    policies: &'p [PathPolicy],
    paths: HashMap<String, PathState>,
    /// Each source label seen, with the id values name it by.
    labels: HashMap<String, LabelId>,
    /// The latest record's (occurred, seq) and parents.
    latest: Option<((i64, u64), Vec<ParentLink>)>,
    /// Reused text: a record's source label, a string's folded form.
    scratch: String,
}

impl<'p> Projector<'p> {
    /// A projector with no records and the given policies (paths not listed use `last`).
    pub fn new(policies: &'p [PathPolicy]) -> Self {
        Self {
            policies,
            paths: HashMap::default(),
            labels: HashMap::default(),
            latest: None,
            scratch: String::new(),
        }
    }

    fn policy(&self, path: &str) -> &'p Policy {
        self.policies
            .iter()
            .find(|p| p.path == path)
            .map(|p| &p.policy)
            .unwrap_or(&Policy::Last)
    }

    /// The id of a source label, given as its text.
    fn label_id(&mut self, label: &str) -> LabelId {
        if let Some(&id) = self.labels.get(label) {
            return id;
        }
        let id = LabelId::try_from(self.labels.len()).expect("fewer than 2^32 sources");
        self.labels.insert(label.to_string(), id);
        id
    }

    /// Adds one keyed record.
    pub fn add(&mut self, keyed: &KeyedRecord) {
        let record = &keyed.record;
        let seq = record.seq;
        let stamp = (record.occurred_micros, seq);
        if self.latest.as_ref().is_none_or(|(best, _)| stamp > *best) {
            self.latest = Some((stamp, keyed.parents.clone()));
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        record.push_source_label(&mut scratch);
        let label = self.label_id(&scratch);

        // The record's scalars in document order; a value's position is its index here.
        let mut flat = Vec::with_capacity(2 * record.payload.len());
        flatten_members(record.payload.iter(), &mut flat);
        // The same path's values together (in document order), one path after another. Each
        // path is hashed once and the values sorted by hash: the sort compares numbers, and
        // the texts of paths only where two hash alike (the same path, or a collision).
        let by_hash = foldhash::fast::FixedState::default();
        let mut order: Vec<(u64, u32)> = (0..flat.len() as u32)
            .map(|i| (by_hash.hash_one(&*flat[i as usize].0), i))
            .collect();
        let path_of = |&(_, i): &(u64, u32)| &*flat[i as usize].0;
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| path_of(a).cmp(path_of(b)))
                .then(a.1.cmp(&b.1))
        });
        if self.paths.is_empty() && !order.is_empty() {
            // Most records of a reference share their paths: room for the first one's (told
            // apart by hash; a long list is one path) saves growing the map step by step.
            let paths = 1 + order.windows(2).filter(|w| w[0].0 != w[1].0).count();
            self.paths.reserve(paths);
        }
        let mut values: Vec<&Value> = Vec::new();
        for run in order.chunk_by(|a, b| a.0 == b.0 && path_of(a) == path_of(b)) {
            let path = path_of(&run[0]);
            let policy = self.policy(path);
            let first = (seq, run[0].1);
            let state = match self.paths.get_mut(path) {
                Some(state) => state,
                None => self
                    .paths
                    .entry(path.to_string())
                    .or_insert_with(|| PathState::new(first)),
            };
            state.first = state.first.min(first);
            values.clear();
            let mut in_array = false;
            for &(_, i) in run {
                let (_, value, arr) = &flat[i as usize];
                in_array |= arr;
                values.push(value);
                let seen = (seq, i);
                let class = state.class_of(value, seen, &mut scratch);
                let entry = &mut state.values[class];
                entry.saw(seen, value);
                entry.asserted_by(label, seq);
            }
            offer_record(&mut state.root, policy, record, &values, in_array);
        }
        self.scratch = scratch;
    }

    /// Merges another projector's records into this one (both must use the same policies).
    pub fn merge(&mut self, other: Projector<'_>) {
        if let Some((stamp, parents)) = other.latest
            && self.latest.as_ref().is_none_or(|(best, _)| stamp > *best)
        {
            self.latest = Some((stamp, parents));
        }
        // Their label ids → ours.
        let mut theirs_to_ours = vec![0; other.labels.len()];
        for (label, id) in &other.labels {
            theirs_to_ours[*id as usize] = self.label_id(label);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for (path, theirs) in other.paths {
            let ours = match self.paths.get_mut(&path) {
                Some(ours) => ours,
                None => self
                    .paths
                    .entry(path)
                    .or_insert_with(|| PathState::new(theirs.first)),
            };
            ours.first = ours.first.min(theirs.first);
            for value in theirs.values {
                let class = ours.class_of(&value.kept, value.first, &mut scratch);
                let mine = &mut ours.values[class];
                mine.saw(value.first, &value.kept);
                for (label, seq) in value.sources.entries {
                    mine.asserted_by(theirs_to_ours[label as usize], seq);
                }
            }
            if let Some(candidate) = theirs.root
                && ours
                    .root
                    .as_ref()
                    .is_none_or(|best| candidate.rank.beats(candidate.seq, &candidate.value, best))
            {
                ours.root = Some(candidate);
            }
        }
        self.scratch = scratch;
    }

    /// The views of the records added so far, as maps.
    pub fn finish(self) -> Projection {
        let mut maps = Maps::default();
        let parents = self.emit(&mut maps);
        Projection {
            canonical: maps.canonical,
            lineage: maps.lineage,
            root: maps.root,
            parents,
        }
    }

    /// The views of the records added so far, written straight to JSON text: the same
    /// text as the maps of [`Projector::finish`] serialised, without building them.
    pub fn finish_views(self) -> Views {
        TEXT.with_borrow_mut(|text| {
            text.clear();
            let parents = self.emit(text);
            text.close();
            // Like a view buffer, the labels of one reference with very many sources are
            // not kept for good.
            let_go_if_grown(&mut text.labels);
            let_go_if_grown(&mut text.label_spans);
            Views {
                canonical: text.canonical.take(),
                lineage: text.lineage.take(),
                root: text.root.take(),
                parents,
            }
        })
    }

    /// Hands the views, path by path in their final order, to `sink`; returns the parents.
    fn emit(self, sink: &mut impl Sink) -> Vec<ParentLink> {
        let Projector {
            paths,
            labels,
            latest,
            ..
        } = self;
        let mut names: Vec<&str> = vec![""; labels.len()];
        for (label, id) in &labels {
            names[*id as usize] = label;
        }
        let mut paths: Vec<(String, PathState)> = paths.into_iter().collect();
        paths.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
        sink.start(paths.len(), &names);
        let mut sources: Vec<(u64, LabelId)> = Vec::new();
        for (path, state) in paths {
            let mut values = state.values;
            values.sort_by_key(|v| v.first);
            sink.start_path(&path, values.len());
            for (i, v) in values.iter_mut().enumerate() {
                v.sources.compact();
                sources.clear();
                sources.extend(v.sources.entries.iter().map(|(id, seq)| (*seq, *id)));
                sources.sort_unstable();
                sink.value(i, &v.kept, &sources);
            }
            sink.end_path(path, values, state.root.map(|c| c.value));
        }
        latest.map(|(_, p)| p).unwrap_or_default()
    }
}

/// What [`Projector::emit`] writes the views into: maps or JSON text.
trait Sink {
    /// The views of one reference begin: this many paths will follow, and `labels` are the
    /// source labels that sources name by index.
    fn start(&mut self, paths: usize, labels: &[&str]);
    /// A path's canonical values follow, in order.
    fn start_path(&mut self, path: &str, values: usize);
    /// The path's `index`th canonical value, with its sources (intake sequence, label id)
    /// in order.
    fn value(&mut self, index: usize, value: &Value, sources: &[(u64, LabelId)]);
    /// The path's values are done; `root` is the value its policy chose.
    fn end_path(&mut self, path: String, values: Vec<ValueState>, root: Option<Value>);
}

/// The views as maps, for [`Projection`].
#[derive(Default)]
struct Maps {
    canonical: Map<String, Value>,
    lineage: Map<String, Value>,
    root: Map<String, Value>,
    path_lineage: Vec<Value>,
    labels: Vec<String>,
}

impl Sink for Maps {
    fn start(&mut self, paths: usize, labels: &[&str]) {
        // Sized up front: a map that grows moves its entries each time.
        self.canonical = Map::with_capacity(paths);
        self.lineage = Map::with_capacity(paths);
        self.root = Map::with_capacity(paths);
        self.labels = labels.iter().map(|l| l.to_string()).collect();
    }

    fn start_path(&mut self, _path: &str, values: usize) {
        self.path_lineage = Vec::with_capacity(values);
    }

    fn value(&mut self, _index: usize, value: &Value, sources: &[(u64, LabelId)]) {
        let sources = sources
            .iter()
            .map(|(_, id)| Value::String(self.labels[*id as usize].clone()))
            .collect();
        let mut entry = Map::with_capacity(2);
        entry.insert("value".into(), value.clone());
        entry.insert("sources".into(), Value::Array(sources));
        self.path_lineage.push(Value::Object(entry));
    }

    fn end_path(&mut self, path: String, values: Vec<ValueState>, root: Option<Value>) {
        let lineage = std::mem::take(&mut self.path_lineage);
        self.canonical.insert(
            path.clone(),
            Value::Array(values.into_iter().map(|v| v.kept).collect()),
        );
        self.lineage.insert(path.clone(), Value::Array(lineage));
        if let Some(root) = root {
            self.root.insert(path, root);
        }
    }
}

/// The views as JSON text, written as serde_json writes the maps (compact, members in
/// order), into buffers kept for the next reference: each view is then copied out once at
/// its final size instead of growing step by step.
#[derive(Default)]
struct Text {
    canonical: Buffer,
    lineage: Buffer,
    root: Buffer,
    /// The current path as a JSON string, written once for the three views.
    key: Vec<u8>,
    /// The source labels of the reference as JSON strings, one after another, and where
    /// each lies: a label is escaped once, not once for every value it asserted.
    labels: Vec<u8>,
    label_spans: Vec<std::ops::Range<usize>>,
}

thread_local! {
    static TEXT: std::cell::RefCell<Text> = std::cell::RefCell::default();
}

/// One view's text: an object being written.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
}

impl Buffer {
    fn clear(&mut self) {
        self.bytes.clear();
        self.bytes.push(b'{');
    }

    /// Starts a member: its separator (when the object holds more than its `{`) and its
    /// key (already a JSON string).
    fn key(&mut self, key: &[u8]) {
        if self.bytes.len() > 1 {
            self.bytes.push(b',');
        }
        self.bytes.extend_from_slice(key);
        self.bytes.push(b':');
    }

    /// The finished object's text, at its own size. A buffer grown past 1 MiB by one large
    /// view is let go, so that a thread does not keep that much for good.
    fn take(&mut self) -> String {
        debug_assert!(std::str::from_utf8(&self.bytes).is_ok());
        // SAFETY: a view's bytes are serde_json's output (values, keys, labels, written by
        // `write_json`), ASCII punctuation, and copies of whole values already written:
        // UTF-8 throughout. Checking it again was about 1% of a plugin's `project`.
        let text = unsafe { String::from_utf8_unchecked(self.bytes.clone()) };
        let_go_if_grown(&mut self.bytes);
        text
    }
}

/// The most a buffer kept by a thread from one call to the next may hold, in bytes.
const KEPT_BUFFER_MAX: usize = 1 << 20;

/// Lets a kept buffer go once one large call has grown it past [`KEPT_BUFFER_MAX`], so that
/// a thread does not hold that much for good; a smaller one is kept for the next call.
fn let_go_if_grown<T>(buffer: &mut Vec<T>) {
    if buffer.capacity() * std::mem::size_of::<T>() > KEPT_BUFFER_MAX {
        *buffer = Vec::new();
    }
}

/// Writes `value` as serde_json writes it in a map.
fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("JSON values and strings always serialise");
}

impl Text {
    fn views(&mut self) -> [&mut Buffer; 3] {
        [&mut self.canonical, &mut self.lineage, &mut self.root]
    }

    fn clear(&mut self) {
        self.views().into_iter().for_each(Buffer::clear);
    }

    fn close(&mut self) {
        for view in self.views() {
            view.bytes.push(b'}');
        }
    }
}

impl Sink for Text {
    fn start(&mut self, _paths: usize, labels: &[&str]) {
        self.labels.clear();
        self.label_spans.clear();
        for label in labels {
            let start = self.labels.len();
            write_json(&mut self.labels, *label);
            self.label_spans.push(start..self.labels.len());
        }
    }

    fn start_path(&mut self, path: &str, _values: usize) {
        self.key.clear();
        write_json(&mut self.key, path);
        self.canonical.key(&self.key);
        self.canonical.bytes.push(b'[');
        self.lineage.key(&self.key);
        self.lineage.bytes.push(b'[');
    }

    fn value(&mut self, index: usize, value: &Value, sources: &[(u64, LabelId)]) {
        let canonical = &mut self.canonical.bytes;
        let lineage = &mut self.lineage.bytes;
        if index > 0 {
            canonical.push(b',');
            lineage.push(b',');
        }
        // Written once, for the canonical view, and copied from there into the lineage.
        let from = canonical.len();
        write_json(canonical, value);
        lineage.extend_from_slice(br#"{"value":"#);
        lineage.extend_from_slice(&canonical[from..]);
        lineage.extend_from_slice(br#","sources":["#);
        for (i, (_, id)) in sources.iter().enumerate() {
            if i > 0 {
                lineage.push(b',');
            }
            lineage.extend_from_slice(&self.labels[self.label_spans[*id as usize].clone()]);
        }
        lineage.extend_from_slice(b"]}");
    }

    fn end_path(&mut self, _path: String, _values: Vec<ValueState>, root: Option<Value>) {
        self.canonical.bytes.push(b']');
        self.lineage.bytes.push(b']');
        if let Some(root) = root {
            self.root.key(&self.key);
            write_json(&mut self.root.bytes, &root);
        }
    }
}

/// Offers a record's values at one path to the path's root slot under its policy; a value
/// is copied only when it wins.
fn offer_record(
    slot: &mut Option<Candidate>,
    policy: &Policy,
    record: &crate::Record,
    values: &[&Value],
    in_array: bool,
) {
    let seq = record.seq;
    let rank = match policy {
        Policy::Last => Rank::Ordered((-record.occurred_micros, -(seq as i64), 0)),
        Policy::First => Rank::Ordered((record.occurred_micros, seq as i64, 0)),
        Policy::Coalesce(order) => {
            let position = order
                .iter()
                .position(|s| *s == record.source.system)
                .unwrap_or(order.len()) as i64;
            Rank::Ordered((position, -record.occurred_micros, -(seq as i64)))
        }
        // max and min compete value by value.
        Policy::Max | Policy::Min => {
            let rank = Rank::Extreme(*policy == Policy::Max);
            for value in values {
                if slot
                    .as_ref()
                    .is_none_or(|best| rank.beats(seq, value, best))
                {
                    *slot = Some(Candidate {
                        rank: rank.clone(),
                        seq,
                        value: (*value).clone(),
                    });
                }
            }
            return;
        }
    };
    // The record's own value as sent: one value stays a scalar, several (or any reached
    // through an array) are a list. Ordered ranks never look at the value.
    if slot
        .as_ref()
        .is_none_or(|best| rank.beats(seq, &Value::Null, best))
    {
        let value = if in_array || values.len() > 1 {
            Value::Array(values.iter().map(|v| (*v).clone()).collect())
        } else {
            values[0].clone()
        };
        *slot = Some(Candidate { rank, seq, value });
    }
}

#[cfg(test)]
mod tests {
    use super::{LabelId, Projector, Sources};
    use crate::{KeyedRecord, Record, Source};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// The list says what a map of label → first sequence says, and never holds more
        /// than twice the labels (or eight entries) between compactions.
        #[test]
        fn sources_keep_each_label_once_with_its_first_sequence(
            asserted in prop::collection::vec((0u32..6, 0u64..50), 0..200),
        ) {
            let mut sources = Sources::default();
            let mut map: BTreeMap<LabelId, u64> = BTreeMap::new();
            for &(label, seq) in &asserted {
                sources.add(label, seq);
                let first = map.entry(label).or_insert(seq);
                *first = (*first).min(seq);
                prop_assert!(sources.entries.len() <= 2 * map.len().max(8));
            }
            sources.compact();
            prop_assert_eq!(sources.entries, map.into_iter().collect::<Vec<_>>());
        }
    }

    /// The path map is sized from the first record's paths, not its values: a list of a
    /// hundred thousand values is one path.
    #[test]
    fn a_long_list_is_room_for_one_path() {
        let payload = serde_json::json!({"many": (0..100_000).collect::<Vec<_>>(), "one": 1});
        let serde_json::Value::Object(payload) = payload else {
            unreachable!()
        };
        let record = KeyedRecord {
            record: Record {
                seq: 1,
                source: Source {
                    system: "bms".into(),
                    adapter: "bms-v1".into(),
                },
                external_id: "D-1".into(),
                occurred_at: String::new(),
                occurred_micros: 0,
                payload: payload.into(),
            },
            parents: Vec::new(),
        };
        let mut projector = Projector::new(&[]);
        projector.add(&record);
        assert_eq!(projector.paths.len(), 2);
        assert!(
            projector.paths.capacity() < 64,
            "{}",
            projector.paths.capacity()
        );
    }

    #[test]
    fn a_long_run_of_few_sources_stays_small() {
        let mut sources = Sources::default();
        for seq in 0..100_000u64 {
            sources.add((seq % 3) as LabelId, 100_000 - seq);
        }
        assert!(sources.entries.len() <= 16, "{}", sources.entries.len());
        sources.compact();
        assert_eq!(sources.entries, [(0, 1), (1, 3), (2, 2)]);
    }
}
