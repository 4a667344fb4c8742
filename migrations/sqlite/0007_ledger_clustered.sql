-- The ledger clustered by its key (WITHOUT ROWID): a lookup or an update of
-- a key touches one B-tree instead of the key index and the rowid table,
-- which halves the pages a change to scattered keys dirties (bench/NOTES.md).
-- `seen_run` goes: the diff finds deletes by merging, not by marking keys.
CREATE TABLE ferry_ledger_clustered (
    job               TEXT NOT NULL,
    key               TEXT NOT NULL,
    detected_hash     INTEGER NOT NULL,
    detected_version  INTEGER NOT NULL,
    synced_hash       INTEGER,
    synced_version    INTEGER,
    deleted           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, key)
) WITHOUT ROWID;
INSERT INTO ferry_ledger_clustered
    SELECT job, key, detected_hash, detected_version, synced_hash, synced_version, deleted
    FROM ferry_ledger;
DROP TABLE ferry_ledger;
ALTER TABLE ferry_ledger_clustered RENAME TO ferry_ledger;
CREATE INDEX ferry_ledger_deleted ON ferry_ledger (job, key) WHERE deleted = 1;
