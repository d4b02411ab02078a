-- Decision records from sidecars, their chains, quarantined lines, and the
-- fleet of sidecars pulling bundles. Same portability rules as 0001: TEXT,
-- BIGINT and DOUBLE PRECISION only; booleans as 0/1.

-- One row per record id. `record` is the record's canonical JSON without
-- `input`; `input` is the (masked) input document's JSON, when the record
-- carried one, so listing without inputs reads less.
CREATE TABLE decisions (
    id          TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    chain_id    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    ts_us       BIGINT NOT NULL,
    decision    TEXT NOT NULL,
    policy_id   TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    hash_ok     BIGINT NOT NULL,
    record      TEXT NOT NULL,
    input       TEXT,
    label       TEXT,
    ingested_by TEXT NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (ts_us, id);
-- Also serves `node = ?` filters (its first column); a separate
-- (node, ts_us) index cost ingest more than it saved queries.
CREATE INDEX decisions_by_chain ON decisions (node, chain_id, seq);

-- Every policy a record involves (the deciding one and those in `shadow`),
-- for "decisions of policy P" without scanning records.
CREATE TABLE decision_policies (
    policy_id   TEXT NOT NULL,
    ts_us       BIGINT NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (policy_id, ts_us, decision_id)
);
CREATE INDEX decision_policies_by_time ON decision_policies (ts_us);

-- Verification state per (node, chain): records up to `checked_through`
-- have been walked (`checked_hash` is the hash at that seq); the prefix up
-- to `verified_through` links without a break (-1: none yet).
CREATE TABLE chains (
    node             TEXT NOT NULL,
    chain_id         TEXT NOT NULL,
    first_seq        BIGINT NOT NULL,
    last_seq         BIGINT NOT NULL,
    checked_through  BIGINT NOT NULL,
    checked_hash     TEXT NOT NULL,
    verified_through BIGINT NOT NULL,
    gaps             TEXT NOT NULL,
    gap_count        BIGINT NOT NULL,
    breaks           TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (node, chain_id)
);

-- Lines that were not valid records, kept with why.
CREATE TABLE quarantine (
    id          TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    received_us BIGINT NOT NULL,
    identity    TEXT NOT NULL,
    line        BIGINT NOT NULL,
    error       TEXT NOT NULL,
    content     TEXT NOT NULL
);
CREATE INDEX quarantine_by_time ON quarantine (received_us);

-- Which revision each sidecar holds, from its bundle pulls.
CREATE TABLE fleet (
    identity  TEXT NOT NULL,
    node      TEXT NOT NULL,
    bundle    TEXT NOT NULL,
    revision  BIGINT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (identity, node, bundle)
);
