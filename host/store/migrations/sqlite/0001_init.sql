-- flowhost schema, SQLite. Times are microseconds since the Unix epoch; JSON is TEXT.

-- Every model the host has ever known (from a plugin's describe).
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    known_since BIGINT NOT NULL
);

-- Intake: every accepted record, once. `seq` is the intake order.
CREATE TABLE intake (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    system TEXT NOT NULL,
    adapter TEXT NOT NULL,
    external_id TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    occurred_micros BIGINT NOT NULL,
    payload TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    received_micros BIGINT NOT NULL,
    UNIQUE (model, system, external_id, payload_hash)
);

-- Records waiting for association, in queue order (re-queued records go to the back).
CREATE TABLE queue (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    seq BIGINT NOT NULL UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_parked_micros BIGINT
);
CREATE INDEX queue_model_pos ON queue (model, pos);

-- The key index: each key of a model has at most one owner.
CREATE TABLE keys (
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    reference TEXT NOT NULL,
    PRIMARY KEY (model, key)
);

-- Records attached to their reference (entities) or under their parent (value objects).
CREATE TABLE keyed (
    seq BIGINT PRIMARY KEY,
    model TEXT NOT NULL,
    reference TEXT,
    parent_ref TEXT,
    parents TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    keyed_micros BIGINT NOT NULL
);
CREATE INDEX keyed_reference ON keyed (reference, seq);
CREATE INDEX keyed_model_parent ON keyed (model, parent_ref);

-- Records that could not be keyed, with why and what they wait for.
CREATE TABLE parked (
    seq BIGINT PRIMARY KEY,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,
    awaited_model TEXT,
    awaited_key TEXT,
    attempts INTEGER NOT NULL,
    first_micros BIGINT NOT NULL,
    last_micros BIGINT NOT NULL
);
CREATE INDEX parked_awaiting ON parked (awaited_model, awaited_key);
CREATE INDEX parked_model_reason ON parked (model, reason);

-- References whose keyed records changed since they were last projected. `stamp` lets a
-- projection clear only the marks it has seen.
CREATE TABLE dirty (
    reference TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    stamp BIGINT NOT NULL
);
CREATE INDEX dirty_model ON dirty (model, stamp);

-- The views of each reference.
CREATE TABLE views (
    reference TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    first_seq BIGINT NOT NULL,
    canonical TEXT NOT NULL,
    root TEXT NOT NULL,
    lineage TEXT NOT NULL,
    parents TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    updated_micros BIGINT NOT NULL
);
CREATE INDEX views_model_order ON views (model, first_seq, reference);

-- Which worker holds a stage of a model, until when.
CREATE TABLE leases (
    stage TEXT NOT NULL,
    model TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_micros BIGINT NOT NULL,
    PRIMARY KEY (stage, model)
);
