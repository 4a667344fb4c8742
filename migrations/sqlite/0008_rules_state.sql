-- What ferry last wrote for each key, per target field: the hash of the
-- value it sent and of the value the target held after the write (JSON
-- object field -> [sent, stored]). A field whose target value no longer
-- matches `stored` was changed by someone else: with a changed `sent` too,
-- that is a conflict.
ALTER TABLE ferry_ledger ADD COLUMN written TEXT;
ALTER TABLE ferry_runs ADD COLUMN conflicts INTEGER NOT NULL DEFAULT 0;
-- Key translation: the key the target gave each source key of a job whose
-- target generates its own keys. Recorded before the row is written, so a
-- retried write reuses it instead of inserting a second row.
CREATE TABLE ferry_idmap (
    job         TEXT NOT NULL,
    source_key  TEXT NOT NULL,
    target_key  TEXT NOT NULL,
    PRIMARY KEY (job, source_key)
) WITHOUT ROWID;
