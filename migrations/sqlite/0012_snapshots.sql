-- A repair (`ferry resync`, `run --once --full`) is recorded before it reads
-- the source: one that did not finish (a killed process) is run again by
-- the job's next run. `scope` is the part of the source, as JSON.
CREATE TABLE ferry_snapshots (
    id           INTEGER PRIMARY KEY,
    job          TEXT NOT NULL,
    scope        TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    run_id       BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT
);
CREATE INDEX ferry_snapshots_open ON ferry_snapshots (job, id) WHERE finished_at IS NULL;
