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

/// Borrows a record as the component's input type (lowering copies it into the guest).
pub fn input_record(r: &core::Record) -> wit::InputRecord<'_> {
    wit::InputRecord {
        seq: r.seq as u64,
        source: wit::Source {
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
