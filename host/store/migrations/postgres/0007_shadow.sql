-- Shadow runs: a candidate plugin version called on the batches the live version decides,
-- writing nothing to the live tables. One run per model (a new candidate starts it over),
-- with its counts, and the differences found (at most a bounded number are kept; the
-- counts go on).
CREATE TABLE shadow_runs (
    model TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    file TEXT NOT NULL,
    started_micros BIGINT NOT NULL,
    updated_micros BIGINT NOT NULL,
    batches BIGINT NOT NULL DEFAULT 0,
    records BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    record_diffs BIGINT NOT NULL DEFAULT 0,
    views BIGINT NOT NULL DEFAULT 0,
    view_diffs BIGINT NOT NULL DEFAULT 0,
    ended TEXT
);

CREATE TABLE shadow_diffs (
    id BIGSERIAL PRIMARY KEY,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    live_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq BIGINT,
    system TEXT,
    external_id TEXT,
    reference TEXT,
    summary TEXT NOT NULL,
    live TEXT NOT NULL,
    candidate TEXT NOT NULL
);
CREATE INDEX shadow_diffs_model ON shadow_diffs (model, id);
