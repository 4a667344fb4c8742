-- The source columns each job read at its last run (name and declared
-- type, as a JSON array), so that a run can tell a dropped, added or
-- retyped column from the last one; and the schema changes ferry made to
-- targets, for `ferry status`.
CREATE TABLE ferry_job_schemas (
    job         TEXT PRIMARY KEY,
    columns     TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE ferry_schema_changes (
    job         TEXT NOT NULL,
    at          BIGINT NOT NULL,
    change      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX ferry_schema_changes_job ON ferry_schema_changes (job, at);
