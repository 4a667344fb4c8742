-- Scheduled ticks claimed once across all daemons, trigger requests, and the
-- tick a run was started for.
CREATE TABLE ferry_ticks (
    job            TEXT NOT NULL,
    scheduled_for  INTEGER NOT NULL,
    holder         TEXT NOT NULL,
    claimed_at     INTEGER NOT NULL,
    PRIMARY KEY (job, scheduled_for)
);

CREATE TABLE ferry_triggers (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job           TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    state         TEXT NOT NULL,
    holder        TEXT,
    run_id        INTEGER,
    outcome       TEXT,
    exit_code     INTEGER,
    finished_at   INTEGER
);
CREATE INDEX ferry_triggers_pending ON ferry_triggers (state, id);

ALTER TABLE ferry_runs ADD COLUMN scheduled_for INTEGER;
