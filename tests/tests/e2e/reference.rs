//! flowhost against a reference model. The model below is a deliberately plain
//! implementation of the association and projection rules as the README states them — one
//! record at a time, in memory, no batches, no database — written from those rules and not
//! from `host/core` or the SDK, for the example `device`, `sensor` and `reading` plugins.
//! Generated workloads (late parents, key collisions, serial-less records healed later,
//! re-sends, several systems, rejections) go through flowhost on one host (SQLite), and on
//! three hosts sharing PostgreSQL with one of them killed and restarted mid-way; the views,
//! lineage, roots, values and parked records must equal the model's.
//!
//! The workloads keep every decision independent of how hosts interleave the models: a
//! device's decisions depend only on earlier devices (intake order, as every scheduler keeps
//! it), and a sensor id always sends the same code, so whether a sensor waits for its device
//! or not changes when it is keyed, never where.

use flowhost_tests::{Host, Http, Scratch, Server, block_until_ok, snapshot, wait_for};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

/// One accepted record.
#[derive(Debug, Clone)]
struct Rec {
    seq: usize,
    model: String,
    system: String,
    id: String,
    minute: u32,
    payload: Map<String, Value>,
}

impl Rec {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.system, self.system, self.id)
    }
    fn occurred(&self) -> String {
        format!("2026-03-01T10:{:02}:00Z", self.minute)
    }
    fn line(&self) -> String {
        json!({"model": self.model, "source": {"system": self.system}, "id": self.id,
               "occurred_at": self.occurred(), "payload": self.payload})
        .to_string()
    }
}

/// What the example plugins say about a record: its aggregation keys and parent keys, or a
/// rejection (their rules, restated).
enum Said {
    Keyed {
        keys: Vec<String>,
        parents: Vec<(String, String)>,
    },
    Rejected,
}

fn plugin(r: &Rec) -> Said {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match r.model.as_str() {
        "device" => {
            let serials = match r.payload.get("serial") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(items)) => items.clone(),
                Some(one) => vec![one.clone()],
            };
            let mut keys = Vec::new();
            for s in serials {
                match s {
                    Value::String(s) if s.trim().is_empty() => {}
                    Value::String(s) => keys.push(format!("serial:{}", s.trim().to_uppercase())),
                    _ => return Said::Rejected,
                }
            }
            Said::Keyed {
                keys,
                parents: vec![],
            }
        }
        "sensor" => {
            let keys = match r.payload.get("code").and_then(text) {
                Some(c) if !c.trim().is_empty() => {
                    vec![format!("sensor:{}", c.trim().to_uppercase())]
                }
                _ => vec![],
            };
            let parents = match r.payload.get("device_id").and_then(text) {
                Some(d) => vec![("device".to_string(), format!("src:{}:{d}", r.system))],
                None => vec![],
            };
            Said::Keyed { keys, parents }
        }
        _ => match r.payload.get("sensor_id").and_then(text) {
            Some(s) => Said::Keyed {
                keys: vec![],
                parents: vec![("sensor".to_string(), format!("src:{}:{s}", r.system))],
            },
            None => Said::Rejected,
        },
    }
}

/// A (model, key) pair: what the key index holds and what a parked record waits for.
type ModelKey = (String, String);
/// A keyed record of a reference: its seq and its parents' references by model.
type Keyed = (usize, BTreeMap<String, usize>);
/// A canonical path's values as kept, each with the sources that asserted it.
type Canon = Vec<(String, Vec<(Value, Vec<String>)>)>;

/// The reference model's state after a workload.
#[derive(Default)]
struct World {
    /// (model, key) → reference.
    owners: HashMap<ModelKey, usize>,
    /// Per reference: its model and its keyed records (seq, parents' references).
    refs: Vec<(String, Vec<Keyed>)>,
    /// Value objects: (seq, parent reference).
    values: Vec<(usize, usize)>,
    /// seq → (reason, the (model, key) it waits for).
    parked: BTreeMap<usize, (&'static str, Option<ModelKey>)>,
}

/// Runs the association rules one record at a time, models parents first, a record that a
/// claim heals going to the back of its model's queue; then the projection rules.
fn reference(records: &[Rec]) -> World {
    let order = ["device", "sensor", "reading"];
    let mut queues: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for r in records {
        queues
            .entry(order.iter().find(|m| **m == r.model).unwrap())
            .or_default()
            .push_back(r.seq);
    }
    let by_seq: HashMap<usize, &Rec> = records.iter().map(|r| (r.seq, r)).collect();
    let mut w = World::default();
    while order
        .iter()
        .any(|m| queues.get(m).is_some_and(|q| !q.is_empty()))
    {
        for model in order {
            while let Some(seq) = queues.get_mut(model).and_then(VecDeque::pop_front) {
                let r = by_seq[&seq];
                let claimed = decide(&mut w, r);
                // Healing: what waited for a key just claimed goes back to its queue.
                let healed: Vec<usize> = w
                    .parked
                    .iter()
                    .filter(|(_, (_, wait))| wait.as_ref().is_some_and(|k| claimed.contains(k)))
                    .map(|(s, _)| *s)
                    .collect();
                for s in healed {
                    w.parked.remove(&s);
                    let m = by_seq[&s].model.as_str();
                    queues.get_mut(m).unwrap().push_back(s);
                }
            }
        }
    }
    w
}

/// Decides one record; returns the (model, key)s it claimed.
fn decide(w: &mut World, r: &Rec) -> Vec<ModelKey> {
    w.parked.remove(&r.seq);
    let Said::Keyed { keys, parents } = plugin(r) else {
        w.parked.insert(r.seq, ("REJECTED", None));
        return vec![];
    };
    let mut parent_refs = BTreeMap::new();
    for (model, key) in parents {
        match w.owners.get(&(model.clone(), key.clone())) {
            Some(p) => {
                parent_refs.insert(model, *p);
            }
            None => {
                w.parked
                    .insert(r.seq, ("PARENT_NOT_FOUND", Some((model, key))));
                return vec![];
            }
        }
    }
    if r.model == "reading" {
        w.values.push((r.seq, parent_refs["sensor"]));
        return vec![];
    }
    let source_key = format!("src:{}:{}", r.system, r.id);
    let mut all = keys.clone();
    all.push(source_key.clone());
    let mut owners: Vec<usize> = all
        .iter()
        .filter_map(|k| w.owners.get(&(r.model.clone(), k.clone())).copied())
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let reference = match owners[..] {
        [] if keys.is_empty() => {
            w.parked
                .insert(r.seq, ("NO_KEYS", Some((r.model.clone(), source_key))));
            return vec![];
        }
        [] => {
            w.refs.push((r.model.clone(), Vec::new()));
            w.refs.len() - 1
        }
        [one] => one,
        _ => {
            w.parked.insert(r.seq, ("KEY_COLLISION", None));
            return vec![];
        }
    };
    w.refs[reference].1.push((r.seq, parent_refs));
    let mut claimed = Vec::new();
    for k in all {
        let k = (r.model.clone(), k);
        if !w.owners.contains_key(&k) {
            w.owners.insert(k.clone(), reference);
            claimed.push(k);
        }
    }
    claimed
}

/// Two values are one canonical value: strings trimmed and case-insensitively, numbers by
/// value, never a string and a number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.trim().to_lowercase() == y.trim().to_lowercase(),
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => false,
    }
}

/// The payload's (path, values, came from an array).
fn paths(payload: &Map<String, Value>) -> Vec<(String, Vec<Value>, bool)> {
    let mut out: Vec<(String, Vec<Value>, bool)> = Vec::new();
    fn add(out: &mut Vec<(String, Vec<Value>, bool)>, path: String, v: &Value, in_array: bool) {
        match v {
            Value::Null => {}
            Value::Array(items) => items.iter().for_each(|i| add(out, path.clone(), i, true)),
            Value::Object(m) => m
                .iter()
                .for_each(|(k, c)| add(out, format!("{path}.{k}"), c, in_array)),
            scalar => match out.iter_mut().find(|(p, _, _)| *p == path) {
                Some((_, values, arr)) => {
                    values.push(scalar.clone());
                    *arr |= in_array;
                }
                None => out.push((path, vec![scalar.clone()], in_array)),
            },
        }
    }
    for (k, v) in payload {
        add(&mut out, k.clone(), v, false);
    }
    out
}

/// The model's export, in the shape of `flowhost_tests::snapshot` (references named by
/// order of first intake).
fn expected(records: &[Rec], w: &World) -> Value {
    let by_seq: HashMap<usize, &Rec> = records.iter().map(|r| (r.seq, r)).collect();
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut views = Map::new();
    for model in ["device", "sensor"] {
        let mut refs: Vec<usize> = (0..w.refs.len())
            .filter(|i| w.refs[*i].0 == model)
            .collect();
        refs.sort_by_key(|i| w.refs[*i].1.iter().map(|(s, _)| *s).min());
        for (n, i) in refs.iter().enumerate() {
            names.insert(*i, format!("{model}#{n}"));
        }
        let (mut canonical, mut roots, mut lineages) = (vec![], vec![], vec![]);
        for i in &refs {
            let name = &names[i];
            let mut keyed = w.refs[*i].1.clone();
            keyed.sort_by_key(|(s, _)| *s);
            // path → [(kept value, [sources])], in first-seen order.
            let mut canon: Canon = Vec::new();
            let mut root: BTreeMap<String, ((u32, usize), Value)> = BTreeMap::new();
            let mut latest: Option<((u32, usize), BTreeMap<String, usize>)> = None;
            for (seq, parents) in &keyed {
                let r = by_seq[seq];
                let at = (r.minute, *seq);
                if latest.as_ref().is_none_or(|(best, _)| at > *best) {
                    latest = Some((at, parents.clone()));
                }
                for (path, values, in_array) in paths(&r.payload) {
                    let slot = match canon.iter().position(|(p, _)| *p == path) {
                        Some(i) => i,
                        None => {
                            canon.push((path.clone(), vec![]));
                            canon.len() - 1
                        }
                    };
                    for v in &values {
                        let list = &mut canon[slot].1;
                        match list.iter_mut().find(|(kept, _)| same(kept, v)) {
                            Some((_, sources)) if sources.contains(&r.label()) => {}
                            Some((_, sources)) => sources.push(r.label()),
                            None => list.push((v.clone(), vec![r.label()])),
                        }
                    }
                    let value = if values.len() == 1 && !in_array {
                        values[0].clone()
                    } else {
                        Value::Array(values)
                    };
                    if root.get(&path).is_none_or(|(best, _)| at > *best) {
                        root.insert(path, (at, value));
                    }
                }
            }
            let c: Map<String, Value> = canon
                .iter()
                .map(|(p, vs)| (p.clone(), vs.iter().map(|(v, _)| v.clone()).collect()))
                .collect();
            let l: Map<String, Value> = canon
                .iter()
                .map(|(p, vs)| {
                    let entries = vs
                        .iter()
                        .map(|(v, s)| json!({"value": v, "sources": s}))
                        .collect();
                    (p.clone(), Value::Array(entries))
                })
                .collect();
            let rt: Map<String, Value> = root.into_iter().map(|(p, (_, v))| (p, v)).collect();
            let parents: Map<String, Value> = latest
                .map(|(_, p)| p)
                .unwrap_or_default()
                .into_iter()
                .map(|(m, p)| (m, json!(names[&p])))
                .collect();
            canonical.push(json!({"id": name, "model": model, "canonical": c}));
            roots.push(json!({"id": name, "model": model, "root": rt, "parents": parents}));
            lineages.push(json!({"id": name, "model": model, "lineage": l}));
        }
        views.insert(format!("canonical {model}"), Value::Array(canonical));
        views.insert(format!("root {model}"), Value::Array(roots));
        views.insert(format!("lineage {model}"), Value::Array(lineages));
    }
    // Values: under their parents (parents by first intake), then by time, then intake.
    let first_of = |p: usize| w.refs[p].1.iter().map(|(s, _)| *s).min();
    let mut values = w.values.clone();
    values.sort_by_key(|(seq, p)| (first_of(*p), by_seq[seq].minute, *seq));
    let values: Vec<Value> = values
        .iter()
        .map(|(seq, p)| {
            let r = by_seq[seq];
            json!({"model": "reading", "source": {"system": r.system, "adapter": r.system},
                   "id": r.id, "occurred_at": r.occurred(), "payload": r.payload,
                   "parent": {"model": "sensor", "id": names[p]}})
        })
        .collect();
    let mut parked: Vec<(String, String, String, String)> = w
        .parked
        .iter()
        .map(|(seq, (reason, _))| {
            let r = by_seq[seq];
            (
                r.model.clone(),
                r.system.clone(),
                r.id.clone(),
                reason.to_string(),
            )
        })
        .collect();
    parked.sort();
    json!({"views": views, "values": values, "parked": parked})
}

/// A workload: devices (serials as strings, lists, missing, null, empty or bad; names in
/// several spellings), sensors (a fixed code and device per id, sent or left out), readings
/// (of sensors that come, late or never), and re-sends of earlier lines.
fn arb_records() -> impl Strategy<Value = Vec<Rec>> {
    let system = prop::sample::select(vec!["bms", "oem"]);
    let device = (
        system.clone(),
        1..6u8,
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!([]))),
            prop::sample::select(vec!["s1", "S1 ", "s2", "s3", " s4"]).prop_map(|s| Some(json!(s))),
            Just(Some(json!(["s1", "s2"]))),
            Just(Some(json!(["S3", "s5"]))),
            Just(Some(json!(7))),
        ],
        prop::sample::select(vec!["Chiller", "chiller ", "Pump", "pump"]),
        prop::option::of(1..4u8),
    )
        .prop_map(|(system, id, serial, name, floor)| {
            let mut p = Map::new();
            if let Some(serial) = serial {
                p.insert("serial".into(), serial);
            }
            p.insert("name".into(), json!(name));
            if let Some(floor) = floor {
                p.insert("loc".into(), json!({"floor": floor}));
            }
            ("device", system, format!("D{id}"), p)
        });
    let sensor = (system.clone(), 1..5u8, any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        |(system, id, with_code, with_device, unit)| {
            let mut p = Map::new();
            // A sensor id always names the same code and the same device (D9 never comes).
            if with_code {
                p.insert(
                    "code".into(),
                    json!(["t1", "T1 ", "t2", "t3"][id as usize - 1]),
                );
            }
            if with_device {
                p.insert(
                    "device_id".into(),
                    json!(["D1", "D2", "D9", "D3"][id as usize - 1]),
                );
            }
            p.insert("unit".into(), json!(["C", "c", "K"][unit as usize]));
            ("sensor", system, format!("S{id}"), p)
        },
    );
    let reading = (system, 1..6u8, 0..20u8).prop_map(|(system, sensor, n)| {
        let mut p = Map::new();
        if n != 0 {
            p.insert("sensor_id".into(), json!(format!("S{sensor}")));
        }
        p.insert("value".into(), json!(n));
        ("reading", system, format!("R{n}"), p)
    });
    let line = (
        prop_oneof![3 => device, 2 => sensor, 2 => reading],
        0..60u32,
    );
    (
        prop::collection::vec(line, 10..80),
        prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    )
        .prop_map(|(lines, resends)| {
            let mut out: Vec<Rec> = lines
                .into_iter()
                .map(|((model, system, id, payload), minute)| Rec {
                    seq: 0,
                    model: model.into(),
                    system: system.into(),
                    id,
                    minute,
                    payload,
                })
                .collect();
            for i in resends {
                let again = out[i.index(out.len())].clone();
                out.push(again);
            }
            out
        })
}

/// The lines to send, and the records intake accepts from them (a line equal to an earlier
/// one in model, system, id and payload is a duplicate), numbered in intake order.
fn accepted(records: &[Rec]) -> (String, Vec<Rec>) {
    let mut seen = std::collections::HashSet::new();
    let mut text = String::new();
    let mut kept = Vec::new();
    for r in records {
        text += &r.line();
        text.push('\n');
        let identity = (
            r.model.clone(),
            r.system.clone(),
            r.id.clone(),
            Value::Object(r.payload.clone()).to_string(),
        );
        if seen.insert(identity) {
            kept.push(Rec {
                seq: kept.len(),
                ..r.clone()
            });
        }
    }
    (text, kept)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn one_host_gives_what_the_reference_model_gives(records in arb_records()) {
        let (input, kept) = accepted(&records);
        let want = expected(&kept, &reference(&kept));
        let db = Scratch::sqlite();
        let host = Host::new(&db.url);
        block_until_ok(&host.ingest(&input));
        host.process();
        let got = snapshot(&host);
        prop_assert_eq!(&got, &want, "input:\n{}", input);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    #[test]
    fn three_hosts_with_a_kill_give_what_the_reference_model_gives(records in arb_records()) {
        let Some(db) = Scratch::postgres() else {
            return Ok(());
        };
        let (input, kept) = accepted(&records);
        let want = expected(&kept, &reference(&kept));
        let host = Host::new(&db.url);
        let args = ["--set", "stages.lease_ttl_ms=1000"];
        let mut servers: Vec<Server> = (0..3).map(|_| Server::start(&host, &args)).collect();
        let mut urls: Vec<String> = servers.iter_mut().map(Server::url).collect();
        // In order, ten lines a request, to the hosts in turn; the first host is killed
        // (SIGKILL) a third of the way in and started again.
        let lines: Vec<&str> = input.lines().collect();
        let requests = lines.len().div_ceil(10);
        for (n, chunk) in lines.chunks(10).enumerate() {
            let answer = Http::new(&urls[n % 3]).records(&(chunk.join("\n") + "\n"));
            prop_assert_eq!(answer.status, 200, "{}", answer.body);
            if n == requests / 3 {
                drop(servers.remove(0));
                let mut again = Server::start(&host, &args);
                urls[0] = again.url();
                servers.insert(0, again);
            }
        }
        wait_for("the hosts to finish", Duration::from_secs(120), || {
            flowhost_tests::count_by(
                &db.url,
                "SELECT 'n', (SELECT COUNT(*) FROM queue) + \
                 (SELECT COUNT(*) FROM dirty WHERE error IS NULL)",
            )[0].1 == 0
        });
        let got = snapshot(&host);
        for s in servers {
            prop_assert!(s.stop().success());
        }
        prop_assert_eq!(&got, &want, "input:\n{}", input);
    }
}
