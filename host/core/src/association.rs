//! The association decision of one batch (README: "How records become references", rules 1–6).
//!
//! The engine asks the plugin for each record's keys and parents, looks up every key and
//! every parent of the batch in one query each, and hands the answers to [`decide`]. The
//! decision is made record by record in intake order against the looked-up owners plus
//! the claims made earlier in the same batch, so a batch decides exactly as processing
//! its records one at a time would (sequential equivalence).

use crate::{Association, Kind, ParentKey, ParentLink, ParkReason, Record};
use std::collections::{BTreeSet, HashMap};

/// What happens to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An entity record attached to `reference` (minted for it when `minted`).
    Keyed {
        reference: String,
        minted: bool,
        parents: Vec<ParentLink>,
    },
    /// A value-object record attached under its parents.
    Attached { parents: Vec<ParentLink> },
    /// A record that could not be keyed; `awaiting` is the key whose claim heals it.
    Parked {
        reason: ParkReason,
        details: String,
        awaiting: Option<ParentKey>,
    },
}

/// A key claimed for a reference by the record at index `record` of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub record: usize,
    pub key: String,
    pub reference: String,
}

/// The decision for a whole batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// One outcome per record, in batch order.
    pub outcomes: Vec<Outcome>,
    /// New keys of the batch's model, in the order they were claimed.
    pub claims: Vec<Claim>,
}

/// The keys [`decide`] needs looked up for a batch: the batch model's own keys (aggregation
/// and source keys) and the parents' keys, each distinct.
pub fn lookups(
    kind: Kind,
    records: &[Record],
    associations: &[Association],
) -> (Vec<String>, Vec<ParentKey>) {
    let mut own = BTreeSet::new();
    let mut parents = BTreeSet::new();
    for (record, association) in records.iter().zip(associations) {
        if let Association::Keyed {
            keys,
            parents: named,
        } = association
        {
            if kind == Kind::Entity {
                own.extend(keys.iter().cloned());
                own.insert(record.source_key());
            }
            parents.extend(named.iter().cloned());
        }
    }
    (own.into_iter().collect(), parents.into_iter().collect())
}

/// Decides a batch of one model.
///
/// - `owners`: key → reference for the batch model's keys that were already owned;
/// - `parent_owners`: parent key → reference, for the parents that were found;
/// - `mint`: makes a new reference.
pub fn decide(
    model: &str,
    kind: Kind,
    records: &[Record],
    associations: &[Association],
    owners: &HashMap<String, String>,
    parent_owners: &HashMap<ParentKey, String>,
    mint: &mut dyn FnMut() -> String,
) -> Decision {
    assert_eq!(
        records.len(),
        associations.len(),
        "one association per record"
    );
    let mut known = Owners {
        looked_up: owners,
        claimed: HashMap::new(),
    };
    let mut decision = Decision::default();

    for (index, (record, association)) in records.iter().zip(associations).enumerate() {
        let outcome = match association {
            Association::Rejected { code, message } => Outcome::Parked {
                reason: ParkReason::Rejected,
                details: format!("{code}: {message}"),
                awaiting: None,
            },
            Association::Keyed { keys, parents } => {
                // Rule 6: a missing parent wins over key problems; a parked record claims nothing.
                let mut links = Vec::with_capacity(parents.len());
                let mut missing = None;
                for parent in parents {
                    let found = parent_owners.get(parent).cloned().or_else(|| {
                        (parent.model == model)
                            .then(|| known.claimed.get(&parent.key).cloned())
                            .flatten()
                    });
                    match found {
                        Some(reference) => links.push(ParentLink {
                            model: parent.model.clone(),
                            reference,
                        }),
                        None => {
                            missing = Some(parent.clone());
                            break;
                        }
                    }
                }
                if let Some(parent) = missing {
                    Outcome::Parked {
                        reason: ParkReason::ParentNotFound,
                        details: format!("parent {} key {} not found", parent.model, parent.key),
                        awaiting: Some(parent),
                    }
                } else if kind == Kind::ValueObject {
                    if links.is_empty() {
                        Outcome::Parked {
                            reason: ParkReason::ParentNotFound,
                            details: "a value object must name its parent".into(),
                            awaiting: None,
                        }
                    } else {
                        Outcome::Attached { parents: links }
                    }
                } else {
                    decide_entity(
                        model,
                        (index, record),
                        keys,
                        links,
                        &mut known,
                        &mut decision.claims,
                        mint,
                    )
                }
            }
        };
        decision.outcomes.push(outcome);
    }
    decision
}

/// The owners known while deciding a batch: those looked up, and the claims made earlier in
/// the same batch.
struct Owners<'a> {
    looked_up: &'a HashMap<String, String>,
    claimed: HashMap<String, String>,
}

impl Owners<'_> {
    fn owner(&self, key: &str) -> Option<String> {
        self.claimed
            .get(key)
            .or_else(|| self.looked_up.get(key))
            .cloned()
    }
}

fn decide_entity(
    model: &str,
    (index, record): (usize, &Record),
    keys: &[String],
    parents: Vec<ParentLink>,
    known: &mut Owners<'_>,
    claims: &mut Vec<Claim>,
    mint: &mut dyn FnMut() -> String,
) -> Outcome {
    let source_key = record.source_key();
    let mut all_keys: Vec<&str> = Vec::with_capacity(keys.len() + 1);
    for key in keys.iter().map(String::as_str).chain([source_key.as_str()]) {
        if !all_keys.contains(&key) {
            all_keys.push(key);
        }
    }
    let mut owners: Vec<String> = Vec::new();
    for key in &all_keys {
        if let Some(owner) = known.owner(key)
            && !owners.contains(&owner)
        {
            owners.push(owner);
        }
    }
    let aggregation_keys = keys.iter().any(|k| *k != source_key);
    let (reference, minted) = match owners.len() {
        0 if !aggregation_keys => {
            return Outcome::Parked {
                reason: ParkReason::NoKeys,
                details: format!("no aggregation keys; waiting for source key {source_key}"),
                awaiting: Some(ParentKey {
                    model: model.to_string(),
                    key: source_key,
                }),
            };
        }
        0 => (mint(), true),
        1 => (owners.remove(0), false),
        _ => {
            owners.sort();
            return Outcome::Parked {
                reason: ParkReason::KeyCollision,
                details: format!(
                    "keys {} belong to references {}",
                    all_keys.join(", "),
                    owners.join(", ")
                ),
                awaiting: None,
            };
        }
    };
    for key in all_keys {
        if known.owner(key).is_none() {
            known.claimed.insert(key.to_string(), reference.clone());
            claims.push(Claim {
                record: index,
                key: key.to_string(),
                reference: reference.clone(),
            });
        }
    }
    Outcome::Keyed {
        reference,
        minted,
        parents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;
    use proptest::prelude::*;

    fn rec(seq: i64, system: &str, id: &str) -> Record {
        Record {
            seq,
            model: "device".into(),
            source: Source {
                system: system.into(),
                adapter: system.into(),
            },
            external_id: id.into(),
            occurred_at: String::new(),
            occurred_micros: 0,
            payload: "{}".into(),
        }
    }

    fn keyed(keys: &[&str]) -> Association {
        Association::Keyed {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            parents: Vec::new(),
        }
    }

    fn minter() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("ref-{n}")
        }
    }

    fn run(
        records: &[Record],
        assocs: &[Association],
        owners: &HashMap<String, String>,
    ) -> Decision {
        decide(
            "device",
            Kind::Entity,
            records,
            assocs,
            owners,
            &HashMap::new(),
            &mut minter(),
        )
    }

    #[test]
    fn shared_new_key_in_one_batch_gets_one_reference() {
        let d = run(
            &[rec(1, "bms", "D-1"), rec(2, "oem", "X-9")],
            &[keyed(&["serial:SN-001"]), keyed(&["serial:SN-001"])],
            &HashMap::new(),
        );
        assert_eq!(
            d.outcomes[1],
            Outcome::Keyed {
                reference: "ref-1".into(),
                minted: false,
                parents: vec![]
            }
        );
        let keys: Vec<&str> = d.claims.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["serial:SN-001", "src:bms:D-1", "src:oem:X-9"]);
    }

    #[test]
    fn collision_parks_and_claims_nothing() {
        let owners = HashMap::from([
            ("serial:S1".to_string(), "A".to_string()),
            ("serial:S2".to_string(), "B".to_string()),
        ]);
        let d = run(
            &[rec(1, "bms", "C")],
            &[keyed(&["serial:S1", "serial:S2"])],
            &owners,
        );
        assert!(matches!(
            &d.outcomes[0],
            Outcome::Parked { reason: ParkReason::KeyCollision, details, .. } if details.contains("A, B")
        ));
        assert!(d.claims.is_empty());
    }

    #[test]
    fn no_keys_waits_for_its_source_key_then_joins_through_it() {
        let d = run(
            &[
                rec(1, "bms", "D-3"),
                rec(2, "bms", "D-3"),
                rec(3, "bms", "D-3"),
            ],
            &[keyed(&[]), keyed(&["serial:Z"]), keyed(&[])],
            &HashMap::new(),
        );
        assert!(matches!(
            &d.outcomes[0],
            Outcome::Parked { reason: ParkReason::NoKeys, awaiting: Some(k), .. } if k.key == "src:bms:D-3"
        ));
        assert!(matches!(&d.outcomes[2], Outcome::Keyed { reference, .. } if reference == "ref-1"));
    }

    #[test]
    fn missing_parent_parks_with_the_awaited_key_and_rejection_wins() {
        let assoc = Association::Keyed {
            keys: vec!["sensor:T1".into()],
            parents: vec![ParentKey {
                model: "device".into(),
                key: "src:bms:D-7".into(),
            }],
        };
        let d = run(
            &[rec(1, "bms", "S"), rec(2, "bms", "S2")],
            &[
                assoc,
                Association::Rejected {
                    code: "BAD".into(),
                    message: "no".into(),
                },
            ],
            &HashMap::new(),
        );
        assert!(matches!(
            &d.outcomes[0],
            Outcome::Parked { reason: ParkReason::ParentNotFound, awaiting: Some(k), .. } if k.key == "src:bms:D-7"
        ));
        assert!(
            matches!(&d.outcomes[1], Outcome::Parked { reason: ParkReason::Rejected, details, .. } if details == "BAD: no")
        );
        assert!(d.claims.is_empty());
    }

    fn arb_batch() -> impl Strategy<Value = (Vec<Record>, Vec<Association>)> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b"]),
                prop::sample::select(vec!["1", "2", "3"]),
                prop::collection::vec(prop::sample::select(vec!["k1", "k2", "k3", "k4"]), 0..3),
                0u8..10,
            ),
            0..16,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(i, (system, id, keys, r))| {
                    let assoc = if r == 0 {
                        Association::Rejected {
                            code: "X".into(),
                            message: "x".into(),
                        }
                    } else {
                        keyed(&keys)
                    };
                    (rec(i as i64, system, id), assoc)
                })
                .unzip()
        })
    }

    proptest! {
        /// Rule 3: a batch decides exactly as its records would one at a time.
        #[test]
        fn sequential_equivalence((records, assocs) in arb_batch()) {
            let batch = run(&records, &assocs, &HashMap::new());

            let mut owners = HashMap::new();
            let mut mint = minter();
            let mut one_by_one = Decision::default();
            for i in 0..records.len() {
                let d = decide("device", Kind::Entity, &records[i..=i], &assocs[i..=i], &owners, &HashMap::new(), &mut mint);
                for mut claim in d.claims {
                    owners.insert(claim.key.clone(), claim.reference.clone());
                    claim.record = i;
                    one_by_one.claims.push(claim);
                }
                one_by_one.outcomes.extend(d.outcomes);
            }
            prop_assert_eq!(batch, one_by_one);
        }
    }
}
