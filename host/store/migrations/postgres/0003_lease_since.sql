-- When the current holder of each lease took it, so that hosts and commands can say who has
-- held a stage of a model, and since when.
ALTER TABLE leases ADD COLUMN since_micros BIGINT NOT NULL DEFAULT 0;
