-- How far a reader or writer outside the database got in a log of its own, written in the
-- same transaction as the work it stands for: the last stream sequence of NATS intake whose
-- records are appended (`nats-intake:<stream>`), the last change relayed to a stream
-- (`nats-relay:<stream>`). A position only moves from the value its writer read
-- (compare-and-set), so two writers never both move it.
CREATE TABLE positions (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_micros BIGINT NOT NULL
);
