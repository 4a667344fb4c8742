-- ferry state store, SQLite dialect. Times are unix milliseconds.
CREATE TABLE ferry_jobs (
    job            TEXT PRIMARY KEY,
    next_version   INTEGER NOT NULL DEFAULT 0,
    paused         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE ferry_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT,
    scanned      INTEGER NOT NULL DEFAULT 0,
    changed      INTEGER NOT NULL DEFAULT 0,
    synced       INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);
CREATE INDEX ferry_runs_job ON ferry_runs (job, id);

CREATE TABLE ferry_tasks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    job               TEXT NOT NULL,
    run_id            INTEGER NOT NULL,
    state             TEXT NOT NULL,
    item_count        INTEGER NOT NULL,
    items             TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    run_after         INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_token       INTEGER NOT NULL DEFAULT 0,
    lease_expires_at  INTEGER,
    finished_at       INTEGER,
    last_error        TEXT
);
CREATE INDEX ferry_tasks_claim ON ferry_tasks (job, state, run_after, id);

CREATE TABLE ferry_ledger (
    job               TEXT NOT NULL,
    key               TEXT NOT NULL,
    detected_hash     INTEGER NOT NULL,
    detected_version  INTEGER NOT NULL,
    synced_hash       INTEGER,
    synced_version    INTEGER,
    seen_run          INTEGER,
    deleted           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, key)
);

CREATE TABLE ferry_watermarks (
    job         TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE ferry_leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
