//! Conversions between flowhost's domain types and the component's types.

use crate::bindings::wit;
use flowhost_core as core;

pub fn description(d: wit::Description) -> core::Description {
    core::Description {
        model: d.model,
        kind: match d.kind {
            wit::Kind::Entity => core::Kind::Entity,
            wit::Kind::ValueObject => core::Kind::ValueObject,
        },
        version: d.version,
        parents: d.parents,
        policies: d.policies.into_iter().map(path_policy).collect(),
    }
}

fn path_policy(p: wit::PathPolicy) -> core::PathPolicy {
    core::PathPolicy {
        path: p.path,
        policy: match p.policy {
            wit::Policy::Last => core::Policy::Last,
            wit::Policy::First => core::Policy::First,
            wit::Policy::Max => core::Policy::Max,
            wit::Policy::Min => core::Policy::Min,
            wit::Policy::Coalesce(order) => core::Policy::Coalesce(order),
        },
    }
}

/// Borrows a record as the component's input type (lowering copies it into the guest).
pub fn input_record(r: &core::Record) -> wit::InputRecordParam<'_> {
    wit::InputRecordParam {
        seq: r.seq as u64,
        source: wit::SourceParam {
            system: &r.source.system,
            adapter: &r.source.adapter,
        },
        external_id: &r.external_id,
        occurred_at: &r.occurred_at,
        occurred_micros: r.occurred_micros,
        payload: &r.payload,
    }
}

pub fn association(a: wit::Association) -> core::Association {
    match a {
        wit::Association::Keyed(k) => core::Association::Keyed {
            keys: k.keys,
            parents: k
                .parents
                .into_iter()
                .map(|p| core::ParentKey {
                    model: p.model,
                    key: p.key,
                })
                .collect(),
        },
        wit::Association::Rejected(r) => core::Association::Rejected {
            code: r.code,
            message: r.message,
        },
    }
}

pub fn link_in(l: &core::ParentLink) -> wit::ParentLinkParam<'_> {
    wit::ParentLinkParam {
        model: &l.model,
        reference: &l.reference,
    }
}

pub fn projection(p: wit::Projection) -> core::Projection {
    core::Projection {
        reference: p.reference,
        canonical: p.canonical,
        lineage: p.lineage,
        root: p.root,
        parents: p
            .parents
            .into_iter()
            .map(|l| core::ParentLink {
                model: l.model,
                reference: l.reference,
            })
            .collect(),
    }
}

/// The `host.default-projection` import: the SDK's default projection of each group, run
/// natively for a guest whose language has no port of it.
pub fn default_projection(
    groups: Vec<wit::GroupResult>,
    policies: Vec<wit::PathPolicy>,
) -> Vec<wit::Projection> {
    use flowhost_sdk as sdk;
    let policies: Vec<sdk::PathPolicy> = policies
        .into_iter()
        .map(path_policy)
        .map(|p| sdk::PathPolicy {
            path: p.path,
            policy: match p.policy {
                core::Policy::Last => sdk::Policy::Last,
                core::Policy::First => sdk::Policy::First,
                core::Policy::Max => sdk::Policy::Max,
                core::Policy::Min => sdk::Policy::Min,
                core::Policy::Coalesce(order) => sdk::Policy::Coalesce(order),
            },
        })
        .collect();
    let link = |l: wit::ParentLinkResult| sdk::ParentLink {
        model: l.model,
        reference: l.reference,
    };
    groups
        .into_iter()
        .map(|g| {
            let records = g
                .records
                .into_iter()
                .filter_map(|k| {
                    let r = k.record;
                    // The host keys only records whose payload is a JSON object.
                    let Ok(payload) = sdk::Payload::parse(r.payload) else {
                        return None;
                    };
                    Some(sdk::KeyedRecord {
                        record: sdk::Record {
                            seq: r.seq,
                            source: sdk::Source {
                                system: r.source.system,
                                adapter: r.source.adapter,
                            },
                            external_id: r.external_id,
                            occurred_at: r.occurred_at,
                            occurred_micros: r.occurred_micros,
                            payload,
                        },
                        parents: k.parents.into_iter().map(link).collect(),
                    })
                })
                .collect();
            let group = sdk::Group {
                reference: g.reference,
                records,
            };
            let p = sdk::projection::project_views(&group, &policies);
            wit::Projection {
                reference: group.reference,
                canonical: p.canonical,
                lineage: p.lineage,
                root: p.root,
                parents: p
                    .parents
                    .into_iter()
                    .map(|l| wit::ParentLinkResult {
                        model: l.model,
                        reference: l.reference,
                    })
                    .collect(),
            }
        })
        .collect()
}
