-- Signed checkpoints (--record-keys): whether a record's `sig` verified at
-- ingest (0: no signature, or central has no record keys; 1: valid; 2: bad
-- or by an unknown key), and how far each chain is sealed by a signature.
ALTER TABLE decisions ADD COLUMN sig_check BIGINT NOT NULL DEFAULT 0;
ALTER TABLE chains ADD COLUMN signed_through BIGINT NOT NULL DEFAULT -1;
