-- The snapshot lane: a snapshot of a table source is a set of chunk tasks
-- (key ranges of the source, re-read each time one is tried) in the queue,
-- beside item tasks. `chunk` is the part of the source a chunk task reads
-- (JSON); item tasks have none.
ALTER TABLE ferry_tasks ADD COLUMN chunk TEXT;
ALTER TABLE ferry_tasks ADD COLUMN snapshot_id BIGINT;
-- `lane`: `chunks` for a snapshot split into chunk tasks; NULL for a repair
-- that queues items. `watermark`: a cursor job's cursor when it started;
-- `version_floor`: every version its chunks write is above it, so a live
-- ledger key at or below it after the last chunk is one the source lacks.
ALTER TABLE ferry_snapshots ADD COLUMN lane TEXT;
ALTER TABLE ferry_snapshots ADD COLUMN watermark TEXT;
ALTER TABLE ferry_snapshots ADD COLUMN version_floor BIGINT;
ALTER TABLE ferry_snapshots ADD COLUMN chunks BIGINT;
ALTER TABLE ferry_snapshots ADD COLUMN rows BIGINT;
-- A job's first run: its rows are new to the target as far as ferry knows.
ALTER TABLE ferry_snapshots ADD COLUMN first_run BIGINT NOT NULL DEFAULT 0;
CREATE INDEX ferry_tasks_snapshot ON ferry_tasks (snapshot_id, state) WHERE snapshot_id IS NOT NULL;
