-- One schema for SQLite and PostgreSQL: only types both understand (TEXT,
-- BIGINT, DOUBLE PRECISION), no autoincrement (sequence numbers are taken
-- inside the writing transaction), timestamps as RFC 3339 UTC text.

CREATE TABLE bundles (
    name             TEXT PRIMARY KEY,
    default_decision TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_by       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE policies (
    id             TEXT PRIMARY KEY,
    bundle         TEXT NOT NULL REFERENCES bundles (name),
    latest_version BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL
);

-- Every version ever written; the lifecycle state belongs to a version.
CREATE TABLE policy_versions (
    policy_id      TEXT NOT NULL REFERENCES policies (id),
    version        BIGINT NOT NULL,
    document       TEXT NOT NULL,
    state          TEXT NOT NULL,
    canary_percent DOUBLE PRECISION NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    PRIMARY KEY (policy_id, version)
);

CREATE TABLE transitions (
    policy_id      TEXT NOT NULL REFERENCES policies (id),
    seq            BIGINT NOT NULL,
    version        BIGINT NOT NULL,
    from_state     TEXT NOT NULL,
    to_state       TEXT NOT NULL,
    canary_percent DOUBLE PRECISION NOT NULL,
    reason         TEXT NOT NULL,
    edited_by      TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (policy_id, seq)
);

CREATE TABLE approvals (
    policy_id TEXT NOT NULL REFERENCES policies (id),
    version   BIGINT NOT NULL,
    approver  TEXT NOT NULL,
    signature TEXT NOT NULL,
    identity  TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (policy_id, version, approver)
);

-- Published, signed bundles. The archive is base64 text so the column type
-- is the same in both stores.
CREATE TABLE revisions (
    bundle         TEXT NOT NULL REFERENCES bundles (name),
    revision       BIGINT NOT NULL,
    content_digest TEXT NOT NULL,
    archive        TEXT NOT NULL,
    published_by   TEXT NOT NULL,
    reason         TEXT NOT NULL,
    at             TEXT NOT NULL,
    PRIMARY KEY (bundle, revision)
);
