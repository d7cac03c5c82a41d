//! The batch loops behind [`crate::export_model!`]: convert the component's types to the
//! SDK's, call the author's per-record functions, convert back. Not part of the public API.

use crate::bindings::flowhost::plugin::types as wit;
use crate::{
    Group, Keyed, KeyedRecord, Kind, Model, ParentLink, Payload, Policy, Record, Rejection, Source,
};

/// `describe`, converted to the component's types.
pub fn describe<M: Model>() -> wit::Description {
    let d = M::describe();
    wit::Description {
        model: d.model,
        kind: match d.kind {
            Kind::Entity => wit::Kind::Entity,
            Kind::ValueObject => wit::Kind::ValueObject,
        },
        version: d.version,
        parents: d.parents,
        policies: d
            .policies
            .into_iter()
            .map(|p| wit::PathPolicy {
                path: p.path,
                policy: match p.policy {
                    Policy::Last => wit::Policy::Last,
                    Policy::First => wit::Policy::First,
                    Policy::Max => wit::Policy::Max,
                    Policy::Min => wit::Policy::Min,
                    Policy::Coalesce(order) => wit::Policy::Coalesce(order),
                },
            })
            .collect(),
    }
}

/// Parses a record that crossed the boundary; a payload that is not a JSON object is a
/// rejection, never a trap.
pub fn record(r: wit::InputRecord) -> Result<Record, Rejection> {
    // Only checked and located here: members are parsed when the model reads them.
    let payload =
        Payload::parse(r.payload).map_err(|e| Rejection::new("BAD_PAYLOAD", e.to_string()))?;
    Ok(Record {
        seq: r.seq,
        source: Source {
            system: r.source.system,
            adapter: r.source.adapter,
        },
        external_id: r.external_id,
        occurred_at: r.occurred_at,
        occurred_micros: r.occurred_micros,
        payload,
    })
}

/// `associate`: one decision per record, same order.
pub fn associate<M: Model>(records: Vec<wit::InputRecord>) -> Vec<wit::Association> {
    records
        .into_iter()
        .map(|r| match record(r).and_then(|r| M::associate(&r)) {
            Ok(Keyed { keys, parents }) => wit::Association::Keyed(wit::Keyed {
                keys,
                parents: parents
                    .into_iter()
                    .map(|p| wit::ParentKey {
                        model: p.model,
                        key: p.key,
                    })
                    .collect(),
            }),
            Err(Rejection { code, message }) => {
                wit::Association::Rejected(wit::Rejection { code, message })
            }
        })
        .collect()
}

/// `project`: one projection per group, same order.
pub fn project<M: Model>(groups: Vec<wit::Group>) -> Vec<wit::Projection> {
    let description = M::describe();
    groups
        .into_iter()
        .map(|g| {
            let reference = g.reference;
            let records = g
                .records
                .into_iter()
                .filter_map(|k| {
                    // A record whose payload does not parse asserts nothing; the host only
                    // keys records whose payload is an object, so this is defensive.
                    let parents = k.parents.into_iter().map(link).collect();
                    record(k.record)
                        .ok()
                        .map(|record| KeyedRecord { record, parents })
                })
                .collect();
            let group = Group {
                reference: reference.clone(),
                records,
            };
            let views = M::project(&group, &description);
            wit::Projection {
                reference,
                canonical: views.canonical,
                lineage: views.lineage,
                root: views.root,
                parents: views
                    .parents
                    .into_iter()
                    .map(|l| wit::ParentLink {
                        model: l.model,
                        reference: l.reference,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn link(l: wit::ParentLink) -> ParentLink {
    ParentLink {
        model: l.model,
        reference: l.reference,
    }
}

/// Builds a component-typed record; used by native callers (benchmarks, tests) that drive
/// the glue the way the host drives the component.
pub fn input_record(
    seq: u64,
    system: &str,
    adapter: &str,
    external_id: &str,
    occurred_at: &str,
    occurred_micros: i64,
    payload: &str,
) -> wit::InputRecord {
    wit::InputRecord {
        seq,
        source: wit::Source {
            system: system.into(),
            adapter: adapter.into(),
        },
        external_id: external_id.into(),
        occurred_at: occurred_at.into(),
        occurred_micros,
        payload: payload.into(),
    }
}
