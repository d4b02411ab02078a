-- Which client identity a node's records come from: the first identity
-- that posted records for a node owns it, so one compromised or
-- misconfigured sidecar cannot write into (and break) another node's chain.
CREATE TABLE node_owners (
    node     TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    since    TEXT NOT NULL
);
