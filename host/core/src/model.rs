//! The host-side domain types. They mirror the plugin contract (`wit/flowhost.wit`)
//! without depending on any runtime.

use std::fmt;

/// What kind of model a plugin defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Records are associated into references and projected into canonical views.
    Entity,
    /// Records only hang under a parent reference.
    ValueObject,
}

impl Kind {
    /// The name used in logs, exports and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Entity => "entity",
            Kind::ValueObject => "value-object",
        }
    }
}

/// How the root view picks one value for a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Last,
    First,
    Max,
    Min,
    Coalesce(Vec<String>),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Last => f.write_str("last"),
            Policy::First => f.write_str("first"),
            Policy::Max => f.write_str("max"),
            Policy::Min => f.write_str("min"),
            Policy::Coalesce(order) => write!(f, "coalesce({})", order.join(", ")),
        }
    }
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

/// Who sent a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub system: String,
    pub adapter: String,
}

/// One intake record as stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Intake sequence: strictly increasing in intake order.
    pub seq: i64,
    pub model: String,
    pub source: Source,
    pub external_id: String,
    /// RFC 3339, UTC.
    pub occurred_at: String,
    pub occurred_micros: i64,
    /// The payload object as JSON text, as sent.
    pub payload: String,
}

impl Record {
    /// The record's source key, `src:{system}:{external id}`.
    pub fn source_key(&self) -> String {
        source_key(&self.source.system, &self.external_id)
    }
}

/// The source key every entity record has: `src:{system}:{external id}`.
pub fn source_key(system: &str, external_id: &str) -> String {
    format!("src:{system}:{external_id}")
}

/// A parent named by a key of the parent model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentKey {
    pub model: String,
    pub key: String,
}

/// The plugin's decision for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Association {
    Keyed {
        keys: Vec<String>,
        parents: Vec<ParentKey>,
    },
    Rejected {
        code: String,
        message: String,
    },
}

/// A parent the host resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParentLink {
    pub model: String,
    pub reference: String,
}

/// A record attached to its reference, with its parents' references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    pub record: Record,
    pub parents: Vec<ParentLink>,
}

/// One reference and all its keyed records, in intake order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub reference: String,
    pub records: Vec<KeyedRecord>,
}

/// The views of one reference, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub reference: String,
    pub canonical: String,
    pub lineage: String,
    pub root: String,
    pub parents: Vec<ParentLink>,
}

/// Why a record is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParkReason {
    /// The plugin rejected it.
    Rejected,
    /// A parent it names is not keyed yet; it waits for that key.
    ParentNotFound,
    /// It has no aggregation key and its source key is unowned; it waits for that key.
    NoKeys,
    /// Its keys belong to two or more references.
    KeyCollision,
    /// The plugin failed (trap, time or memory limit) on it.
    PluginFailed,
    /// The store cannot take its outcome: a key longer than the key index takes, or a
    /// refusal of the database tied to this record (a constraint, a size, an encoding).
    StoreRefused,
}

impl ParkReason {
    /// All reasons, in display order.
    pub const ALL: [ParkReason; 6] = [
        ParkReason::Rejected,
        ParkReason::ParentNotFound,
        ParkReason::NoKeys,
        ParkReason::KeyCollision,
        ParkReason::PluginFailed,
        ParkReason::StoreRefused,
    ];

    /// The code stored and exported (`KEY_COLLISION`).
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::Rejected => "REJECTED",
            ParkReason::ParentNotFound => "PARENT_NOT_FOUND",
            ParkReason::NoKeys => "NO_KEYS",
            ParkReason::KeyCollision => "KEY_COLLISION",
            ParkReason::PluginFailed => "PLUGIN_FAILED",
            ParkReason::StoreRefused => "STORE_REFUSED",
        }
    }

    /// Parses a stored or user-given code, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for ParkReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
