-- Who is at work on this database. Each lease keeps since when its current holder has held
-- it. Each running `serve` announces itself in `hosts` under its lease-holder id (with its
-- address and version) and renews `seen_micros` as often as its leases, so that any host, or
-- `flowhost hosts`, can list the others and what they hold.
ALTER TABLE leases ADD COLUMN since_micros BIGINT NOT NULL DEFAULT 0;

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    listen TEXT NOT NULL,
    version TEXT NOT NULL,
    started_micros BIGINT NOT NULL,
    seen_micros BIGINT NOT NULL
);
