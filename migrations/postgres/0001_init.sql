-- ferry state store, PostgreSQL dialect. Times are unix milliseconds.
CREATE TABLE ferry_jobs (
    job            TEXT PRIMARY KEY,
    next_version   BIGINT NOT NULL DEFAULT 0,
    paused         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE ferry_runs (
    id           BIGSERIAL PRIMARY KEY,
    job          TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    outcome      TEXT,
    scanned      BIGINT NOT NULL DEFAULT 0,
    changed      BIGINT NOT NULL DEFAULT 0,
    synced       BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX ferry_runs_job ON ferry_runs (job, id);

CREATE TABLE ferry_tasks (
    id                BIGSERIAL PRIMARY KEY,
    job               TEXT NOT NULL,
    run_id            BIGINT NOT NULL,
    state             TEXT NOT NULL,
    item_count        BIGINT NOT NULL,
    items             TEXT,
    attempts          BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    run_after         BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_token       BIGINT NOT NULL DEFAULT 0,
    lease_expires_at  BIGINT,
    finished_at       BIGINT,
    last_error        TEXT
);
CREATE INDEX ferry_tasks_claim ON ferry_tasks (job, state, run_after, id);

CREATE TABLE ferry_ledger (
    job               TEXT NOT NULL,
    key               TEXT NOT NULL,
    detected_hash     BIGINT NOT NULL,
    detected_version  BIGINT NOT NULL,
    synced_hash       BIGINT,
    synced_version    BIGINT,
    seen_run          BIGINT,
    deleted           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job, key)
);

CREATE TABLE ferry_watermarks (
    job         TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE ferry_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
