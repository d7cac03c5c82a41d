-- The change feed (an outbox): each projection commit adds, in its own transaction, one row
-- per reference whose views it changed. `seq` only grows, in commit order: readers follow
-- the feed with "after seq". Old rows are pruned after `changes.keep_hours`.
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    reference TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    changed_micros BIGINT NOT NULL
);
CREATE INDEX changes_model ON changes (model, seq);
CREATE INDEX changes_time ON changes (changed_micros);
