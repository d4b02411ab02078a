-- Feedback labels on stored decisions: the last one counts and is copied
-- to decisions.label (what exports, simulations and the canary guard read);
-- every one is kept here with who and when.

CREATE TABLE decision_labels (
    decision_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    label       TEXT NOT NULL,
    note        TEXT NOT NULL,
    labelled_by TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (decision_id, seq)
);
