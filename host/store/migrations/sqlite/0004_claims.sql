-- Projection is shared: any worker of any host claims a batch of a model's dirty references
-- (never one another worker's live claim), projects it, and its commit writes a reference's
-- view only while its claim still holds, then lets the claim go. A claim lapses at
-- `claimed_until` unless renewed, so the references of a host that died are claimed again
-- within the lease length.
ALTER TABLE dirty ADD COLUMN claimed_by TEXT;
ALTER TABLE dirty ADD COLUMN claimed_micros BIGINT;
ALTER TABLE dirty ADD COLUMN claimed_until BIGINT;
CREATE INDEX dirty_claimed ON dirty (claimed_by) WHERE claimed_by IS NOT NULL;
