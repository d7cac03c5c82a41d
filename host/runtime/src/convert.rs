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
        policies: d
            .policies
            .into_iter()
            .map(|p| core::PathPolicy {
                path: p.path,
                policy: match p.policy {
                    wit::Policy::Last => core::Policy::Last,
                    wit::Policy::First => core::Policy::First,
                    wit::Policy::Max => core::Policy::Max,
                    wit::Policy::Min => core::Policy::Min,
                    wit::Policy::Coalesce(order) => core::Policy::Coalesce(order),
                },
            })
            .collect(),
    }
}

pub fn input_record(r: &core::Record) -> wit::InputRecord {
    wit::InputRecord {
        seq: r.seq as u64,
        source: wit::Source {
            system: r.source.system.clone(),
            adapter: r.source.adapter.clone(),
        },
        external_id: r.external_id.clone(),
        occurred_at: r.occurred_at.clone(),
        occurred_micros: r.occurred_micros,
        payload: r.payload.clone(),
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

fn link_in(l: &core::ParentLink) -> wit::ParentLink {
    wit::ParentLink {
        model: l.model.clone(),
        reference: l.reference.clone(),
    }
}

pub fn group(g: &core::Group) -> wit::Group {
    wit::Group {
        reference: g.reference.clone(),
        records: g
            .records
            .iter()
            .map(|k| wit::KeyedRecord {
                record: input_record(&k.record),
                parents: k.parents.iter().map(link_in).collect(),
            })
            .collect(),
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
