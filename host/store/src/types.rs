//! The batch-shaped data the store takes and returns.

use flowhost_core::{Group, ParentKey, ParentLink, ParkReason, Record};

/// Connection options shared by the backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size.
    pub max_connections: u32,
    /// How long a write waits for the write lock (SQLite), or a statement for a connection
    /// of the pool (PostgreSQL).
    pub busy_timeout: std::time::Duration,
    /// SQLite: every commit is flushed to disk before it returns (`synchronous=FULL`), so
    /// an acknowledged record survives a power failure. Off (`NORMAL`), a commit survives a
    /// crash of the process but the last ones may be lost when the machine loses power.
    pub durable_commits: bool,
    /// SQLite: the page cache of the whole pool in MiB, shared out evenly between the
    /// connections (each has a cache of its own).
    pub sqlite_cache_mb: u32,
    /// SQLite: prepared statements kept per connection (least recently used go first).
    pub sqlite_statement_cache: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            busy_timeout: std::time::Duration::from_secs(30),
            durable_commits: true,
            sqlite_cache_mb: 32,
            sqlite_statement_cache: 8,
        }
    }
}

/// A model as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModelInfo {
    pub name: String,
    /// `entity` or `value-object`.
    pub kind: String,
    pub plugin_version: String,
}

/// The answer for one appended record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Durable, with its intake sequence.
    Accepted(i64),
    /// Equal to an earlier record (model, system, external id, payload); nothing written.
    Duplicate,
    /// The database refused this record for a reason of its own (a constraint, a size, an
    /// encoding): its message. Nothing of it was written; the batch's other records were.
    Refused(String),
}

/// The two leased stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Associate,
    Project,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Associate => "associate",
            Stage::Project => "project",
        }
    }
}

/// A worker's lease of one stage of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub stage: Stage,
    pub model: String,
    pub holder: String,
}

/// Work one process at a time does for the whole database, beside the stages: held as a
/// lease (`stage` = its kind, `model` = its key), listed with them (`GET /v1/hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duty {
    /// What it is: `nats-intake`, `nats-relay`.
    pub kind: &'static str,
    /// What of it: the stream's name.
    pub key: String,
    pub holder: String,
}

/// A lease as stored: who holds a stage of a model, since when, until when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LeaseRow {
    pub stage: String,
    pub model: String,
    pub holder: String,
    /// When this holder took it (renewals keep it).
    pub since_micros: i64,
    /// When it lapses unless renewed.
    pub expires_micros: i64,
}

impl LeaseRow {
    /// The process holding it: holder ids are `host/pid/random`, and a projection worker's
    /// claims are held as `host/pid/random/p<n>`.
    pub fn process(&self) -> &str {
        process_of(&self.holder)
    }
}

/// The process of a lease or claim holder id (see [`LeaseRow::process`]).
pub fn process_of(holder: &str) -> &str {
    match holder.match_indices('/').nth(2) {
        Some((at, _)) => &holder[..at],
        None => holder,
    }
}

/// A `serve` process as it announced itself.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostRow {
    /// Its lease-holder id (`host/pid/random`).
    pub id: String,
    /// Its HTTP API's address.
    pub listen: String,
    /// flowhost's version.
    pub version: String,
    pub started_micros: i64,
    /// Its last announcement (renewed as often as its leases).
    pub seen_micros: i64,
}

/// A record waiting for association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Queue position (what the commit removes).
    pub pos: i64,
    /// Times it was parked before.
    pub attempts: i32,
    pub first_parked_micros: Option<i64>,
    pub record: Record,
}

/// A record attached by association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRow {
    pub seq: i64,
    /// The entity reference; `None` for value objects.
    pub reference: Option<String>,
    pub parents: Vec<ParentLink>,
}

/// A record association could not key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkRow {
    pub seq: i64,
    pub reason: ParkReason,
    pub details: String,
    pub awaiting: Option<ParentKey>,
    /// Including this time.
    pub attempts: i32,
    pub first_micros: i64,
}

/// Everything an association batch writes.
#[derive(Debug, Clone, Default)]
pub struct AssociationOutcome {
    pub model: String,
    pub plugin_version: String,
    pub now_micros: i64,
    /// Queue positions the batch consumed.
    pub done: Vec<i64>,
    /// New keys of the model: (key, reference).
    pub claims: Vec<(String, String)>,
    pub keyed: Vec<KeyedRow>,
    pub parked: Vec<ParkRow>,
    /// References whose keyed records changed, with the stamp (the batch's last sequence).
    pub dirty: Vec<String>,
    pub stamp: i64,
}

/// What a committed association batch caused beyond itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSummary {
    /// Parked records re-queued because a key they waited for was claimed.
    pub healed: u64,
}

/// Dirty references with their records, and the marks seen.
#[derive(Debug, Clone, Default)]
pub struct DirtyBatch {
    pub groups: Vec<Group>,
    /// (reference, stamp) as read; the commit clears exactly these.
    pub seen: Vec<(String, i64)>,
}

/// The views of one reference, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ViewRow {
    pub reference: String,
    pub model: String,
    pub first_seq: i64,
    pub canonical: String,
    pub root: String,
    pub lineage: String,
    /// JSON object: parent model → reference.
    pub parents: String,
    pub plugin_version: String,
}

/// One entry of the change feed: a reference whose views a projection changed, with its
/// views as they are now.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ChangeRow {
    pub seq: i64,
    pub model: String,
    pub reference: String,
    /// The plugin version whose projection made the change.
    pub plugin_version: String,
    pub canonical: String,
    pub root: String,
}

/// Where a page of views ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub first_seq: i64,
    pub reference: String,
}

/// A value-object record with its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRow {
    pub record: Record,
    pub parent_model: String,
    pub parent_ref: String,
}

/// Which parked records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkedFilter {
    pub model: Option<String>,
    pub reason: Option<ParkReason>,
}

/// A parked record for listing and export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    pub record: Record,
    pub reason: String,
    pub details: String,
    pub awaiting: Option<ParentKey>,
    pub attempts: i32,
    pub first_micros: i64,
    pub last_micros: i64,
}

/// Counts over the whole store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub intake: i64,
    /// Pending association, per model.
    pub queued: Vec<(String, i64)>,
    /// Dirty references, per model.
    pub dirty: Vec<(String, i64)>,
    /// References (views) per model.
    pub references: Vec<(String, i64)>,
    /// Keyed records per model.
    pub keyed: Vec<(String, i64)>,
    /// Claimed keys, all models.
    pub keys: i64,
    /// Parked records per model and reason.
    pub parked: Vec<(String, String, i64)>,
}

/// A reference whose projection failed, as read (its mark keeps the error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectFailure {
    pub reference: String,
    pub stamp: i64,
    pub error: String,
}

/// A plugin version that passed validation.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PluginVersionRow {
    pub model: String,
    /// Content hash of the component.
    pub version: String,
    /// The file it was loaded from.
    pub file: String,
    /// Where the host keeps a copy of its bytes.
    pub archive: String,
    /// Its `describe` answer, as JSON.
    pub description: String,
    pub first_loaded_micros: i64,
    /// When it was last made current.
    pub last_current_micros: i64,
}

/// How a version became current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// The file in the plugins folder.
    Folder,
    /// An operator chose an earlier version.
    Rollback,
}

impl VersionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionSource::Folder => "folder",
            VersionSource::Rollback => "rollback",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "rollback" {
            VersionSource::Rollback
        } else {
            VersionSource::Folder
        }
    }
}

impl From<String> for VersionSource {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

/// Making a version current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentChange {
    pub model: String,
    pub kind: String,
    pub version: String,
    pub source: VersionSource,
    /// For a rollback: the folder's version it overrides.
    pub folder_version: Option<String>,
}

/// What [`Store::set_current`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switched {
    /// The version differs from the one that was current.
    pub changed: bool,
    /// Views marked for re-projection.
    pub marked: u64,
    /// Records parked `PLUGIN_FAILED` given back to the queue.
    pub requeued: u64,
}

/// A model's current plugin as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PluginState {
    #[sqlx(rename = "name")]
    pub model: String,
    pub kind: String,
    #[sqlx(rename = "plugin_version")]
    pub version: String,
    #[sqlx(try_from = "String")]
    pub source: VersionSource,
    pub folder_version: Option<String>,
    pub since_micros: i64,
    /// `serving`, `paused: …` or `cool-down: …`.
    pub state: String,
}

/// The last outcome of one file of the plugins folder.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PluginFileRow {
    pub file: String,
    pub model: Option<String>,
    pub version: Option<String>,
    /// Why it was refused: `<stage>: <message>`.
    pub error: Option<String>,
    pub checked_micros: i64,
}

/// Re-projection progress of a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Views made by the current version.
    pub current: u64,
    /// Views in all.
    pub total: u64,
    /// References whose projection failed (kept dirty with the error).
    pub failed: u64,
}

/// A reference whose projection failed, with the reason its mark keeps.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailedProjection {
    pub reference: String,
    pub error: String,
}

/// One source's share of a reference.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SourceCount {
    pub system: String,
    pub adapter: String,
    pub records: i64,
    pub last_occurred_at: String,
}

/// What [`crate::Store::health`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Migrations this build has that the database has not applied (`version description`).
    pub missing_migrations: Vec<String>,
}

/// A shadow run: a candidate version of a model called beside the live one (see
/// `Store::start_shadow`).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ShadowRun {
    pub model: String,
    /// The candidate's version (content hash).
    pub version: String,
    /// The candidate's file.
    pub file: String,
    pub started_micros: i64,
    pub updated_micros: i64,
    /// Live batches compared, and their records.
    pub batches: i64,
    pub records: i64,
    /// Records of live batches not compared (the shadow queue was full, or the candidate
    /// could not be called on them in time).
    pub skipped: i64,
    /// Records whose keys, parents or decision differ.
    pub record_diffs: i64,
    /// References whose views were compared, and those whose canonical or root view differs.
    pub views: i64,
    pub view_diffs: i64,
    /// Why the run ended (promoted, the file left the shadow folder); `None` while it runs.
    pub ended: Option<String>,
}

/// What one compared batch adds to a shadow run's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowCounts {
    pub batches: i64,
    pub records: i64,
    pub skipped: i64,
    pub record_diffs: i64,
    pub views: i64,
    pub view_diffs: i64,
}

/// One difference a shadow run found: a record (`kind` = `record`, with its sequence,
/// system and external id) or a reference's views (`kind` = `view`, with the reference).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ShadowDiff {
    pub live_version: String,
    pub kind: String,
    pub seq: Option<i64>,
    pub system: Option<String>,
    pub external_id: Option<String>,
    pub reference: Option<String>,
    /// One line a person reads: what would change.
    pub summary: String,
    /// What the live version gave and what the candidate gives (JSON).
    pub live: String,
    pub candidate: String,
}

/// A model's association decided again from scratch under its current version, committed
/// in one transaction (see `Store::commit_reassociation`).
#[derive(Debug, Clone, Default)]
pub struct Reassociate {
    /// The new decisions of every record decided again: claims (with the references they
    /// keep or get), keyed and parked rows, the references to project. `done` stays empty:
    /// these records are not in the queue.
    pub outcome: AssociationOutcome,
    /// The records decided again (their parked rows are replaced).
    pub redecided: Vec<i64>,
    /// Keyed records of other models that name a reference of this model whose records
    /// changed: they go back to the queue, so their parent links follow.
    pub children: Vec<i64>,
    /// References of the model that no longer exist: their views and marks are deleted.
    pub retired: Vec<String>,
}
