-- Plugin versions and their life: which version of each model is current and why, every
-- version that has been current (for rollback), what the service saw in the plugins folder,
-- and references whose projection failed.

-- `source` says how the current version was chosen: 'folder' (the file in the plugins folder)
-- or 'rollback' (an operator chose an earlier version; `folder_version` is the folder's
-- version it overrides, so a restart keeps the rollback until a new file arrives).
-- `state` is 'serving', 'paused: …' or 'cool-down: …' as last reported by a running host.
ALTER TABLE models ADD COLUMN source TEXT NOT NULL DEFAULT 'folder';
ALTER TABLE models ADD COLUMN folder_version TEXT;
ALTER TABLE models ADD COLUMN since_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN state TEXT NOT NULL DEFAULT 'serving';

-- Every version of every model that has passed validation. `archive` is the copy of its
-- bytes kept by the host; `description` is its describe answer as JSON.
CREATE TABLE plugin_versions (
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    file TEXT NOT NULL,
    archive TEXT NOT NULL,
    description TEXT NOT NULL,
    first_loaded_micros BIGINT NOT NULL,
    last_current_micros BIGINT NOT NULL,
    PRIMARY KEY (model, version)
);

-- The last outcome of each file of the plugins folder: the model and version it gave, or
-- why it was refused (stage and message).
CREATE TABLE plugin_files (
    file TEXT PRIMARY KEY,
    model TEXT,
    version TEXT,
    error TEXT,
    checked_micros BIGINT NOT NULL
);

-- A reference whose projection failed keeps its dirty mark with the error; it is skipped
-- until new records arrive for it, a new plugin version is current, or an operator re-queues.
ALTER TABLE dirty ADD COLUMN error TEXT;
