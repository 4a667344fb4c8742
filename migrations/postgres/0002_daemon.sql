-- Scheduled ticks claimed once across all daemons, trigger requests, and the
-- tick a run was started for.
CREATE TABLE ferry_ticks (
    job            TEXT NOT NULL,
    scheduled_for  BIGINT NOT NULL,
    holder         TEXT NOT NULL,
    claimed_at     BIGINT NOT NULL,
    PRIMARY KEY (job, scheduled_for)
);

CREATE TABLE ferry_triggers (
    id            BIGSERIAL PRIMARY KEY,
    job           TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    state         TEXT NOT NULL,
    holder        TEXT,
    run_id        BIGINT,
    outcome       TEXT,
    exit_code     BIGINT,
    finished_at   BIGINT
);
CREATE INDEX ferry_triggers_pending ON ferry_triggers (state, id);

ALTER TABLE ferry_runs ADD COLUMN scheduled_for BIGINT;
