//! The SDK's own types: what a plugin author reads and returns.

use crate::payload::Payload;
use serde_json::{Map, Value};

/// What kind of model a plugin defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records are associated into references and projected.
    Entity,
    /// Records only hang under a parent reference.
    ValueObject,
}

/// How the root view picks one value for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Latest `occurred_at`, then latest intake (the default).
    Last,
    /// Earliest `occurred_at`, then earliest intake.
    First,
    /// The greatest value.
    Max,
    /// The smallest value.
    Min,
    /// The first non-null value by this priority of source systems; unlisted systems come
    /// after; within one system the latest record wins.
    Coalesce(Vec<String>),
}

/// A root policy for one dotted path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPolicy {
    pub path: String,
    pub policy: Policy,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub model: String,
    pub kind: Kind,
    pub version: String,
    pub parents: Vec<String>,
    pub policies: Vec<PathPolicy>,
}

impl Description {
    /// An entity model with no parents and default policies.
    pub fn entity(model: &str, version: &str) -> Self {
        Self {
            model: model.into(),
            kind: Kind::Entity,
            version: version.into(),
            parents: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// A value-object model hanging under `parent`.
    pub fn value_object(model: &str, version: &str, parent: &str) -> Self {
        Self {
            kind: Kind::ValueObject,
            parents: vec![parent.into()],
            ..Self::entity(model, version)
        }
    }

    /// Adds a parent model.
    pub fn with_parent(mut self, parent: &str) -> Self {
        self.parents.push(parent.into());
        self
    }

    /// Sets the root policy of a path.
    pub fn with_policy(mut self, path: &str, policy: Policy) -> Self {
        self.policies.push(PathPolicy {
            path: path.into(),
            policy,
        });
        self
    }
}

/// Who sent a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub system: String,
    pub adapter: String,
}

/// One observation from one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The host's intake sequence (strictly increasing in intake order).
    pub seq: u64,
    pub source: Source,
    pub external_id: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    /// `occurred_at` in microseconds since the Unix epoch.
    pub occurred_micros: i64,
    /// The payload object, parsed member by member as it is read: [`Record::get`] parses
    /// only the top-level member a path starts with; the payload dereferences to the whole
    /// `Map` when a plugin needs all of it.
    pub payload: Payload,
}

impl Record {
    /// The value at a dotted path of the payload (`location.floor`), if any.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut current = self.payload.get(parts.next()?)?;
        // Nested members were parsed with their top-level member.
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }

    /// The strings at a path: a string, or each string of a list of strings. Anything
    /// else (numbers, nulls, objects) yields nothing.
    pub fn strings<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a str> + 'a {
        let value = self.get(path);
        let (one, many) = match value {
            Some(Value::String(s)) => (Some(s.as_str()), None),
            Some(Value::Array(items)) => (None, Some(items.iter().filter_map(Value::as_str))),
            _ => (None, None),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The string at a path, if it is a non-blank string.
    pub fn string(&self, path: &str) -> Option<&str> {
        self.get(path)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    /// This record's own source key, `src:{system}:{external id}`.
    pub fn source_key(&self) -> String {
        source_key(&self.source.system, &self.external_id)
    }

    /// `system/adapter/external id`, as lineage names a source.
    pub fn source_label(&self) -> String {
        let mut label = String::new();
        self.push_source_label(&mut label);
        label
    }

    /// Appends [`Record::source_label`] to `out`; the projection builds it into a reused
    /// buffer. Built by hand: `format!` goes through the formatting machinery, which costs a
    /// plugin dearly.
    pub(crate) fn push_source_label(&self, out: &mut String) {
        for part in [
            self.source.system.as_str(),
            "/",
            &self.source.adapter,
            "/",
            &self.external_id,
        ] {
            out.push_str(part);
        }
    }
}

/// The source key of a record of `system` with `external_id`: `src:{system}:{external id}`.
/// The host gives every entity record this key; parents usually name it.
pub fn source_key(system: &str, external_id: &str) -> String {
    ["src:", system, ":", external_id].concat()
}

/// An aggregation key: `kind:value` (`key("serial", "SN-001")` is `serial:SN-001`). The value
/// is used as given; normalise it first (trim, upper-case) as the model's rule says. Built
/// without `format!`, whose formatting machinery is dear in a plugin.
pub fn key(kind: &str, value: &str) -> String {
    [kind, ":", value].concat()
}

/// A parent named by a key of the parent model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentKey {
    pub model: String,
    pub key: String,
}

impl ParentKey {
    /// The parent of `model` whose source key in `system` is `external_id`.
    pub fn by_source(model: &str, system: &str, external_id: &str) -> Self {
        Self {
            model: model.into(),
            key: source_key(system, external_id),
        }
    }
}

/// A plugin's decision for a record it can key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keyed {
    pub keys: Vec<String>,
    pub parents: Vec<ParentKey>,
}

/// A plugin's refusal of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A parent reference the host resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLink {
    pub model: String,
    pub reference: String,
}

/// A record after association, with its parents' references.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedRecord {
    pub record: Record,
    pub parents: Vec<ParentLink>,
}

/// One reference and all its keyed records, in intake order.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub reference: String,
    pub records: Vec<KeyedRecord>,
}

/// The views of one reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Dotted path → ordered distinct values.
    pub canonical: Map<String, Value>,
    /// Dotted path → one entry per canonical value, in the same order:
    /// `{"value": …, "sources": ["system/adapter/id", …]}`.
    pub lineage: Map<String, Value>,
    /// Dotted path → the value its policy chose.
    pub root: Map<String, Value>,
    /// The parents of the latest record.
    pub parents: Vec<ParentLink>,
}

/// The views of one reference as JSON text: what a plugin hands back to the host. Each view
/// is one JSON object with the members of the matching map of [`Projection`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Views {
    /// Dotted path → ordered distinct values.
    pub canonical: String,
    /// Dotted path → one entry per canonical value, in the same order.
    pub lineage: String,
    /// Dotted path → the value its policy chose.
    pub root: String,
    /// The parents of the latest record.
    pub parents: Vec<ParentLink>,
}

impl From<Projection> for Views {
    /// The maps written as JSON text.
    fn from(p: Projection) -> Self {
        let text = |map: &Map<String, Value>| {
            serde_json::to_string(map).expect("a map of JSON values always serialises")
        };
        Self {
            canonical: text(&p.canonical),
            lineage: text(&p.lineage),
            root: text(&p.root),
            parents: p.parents,
        }
    }
}

impl Views {
    /// The views read back as maps (for tests and for a projection that adjusts the
    /// default's); an error when a view is not a JSON object.
    pub fn projection(&self) -> Result<Projection, serde_json::Error> {
        let map = |text: &str| serde_json::from_str::<Map<String, Value>>(text);
        Ok(Projection {
            canonical: map(&self.canonical)?,
            lineage: map(&self.lineage)?,
            root: map(&self.root)?,
            parents: self.parents.clone(),
        })
    }
}

/// Log levels for [`crate::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}
