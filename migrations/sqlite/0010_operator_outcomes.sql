-- Who holds a lease (host, process id, since when): a run that finds a job
-- busy names the holder, and a holder on this host whose process is gone
-- is taken over at once instead of waiting for the lease to expire.
ALTER TABLE ferry_leases ADD COLUMN host TEXT;
ALTER TABLE ferry_leases ADD COLUMN pid INTEGER;
ALTER TABLE ferry_leases ADD COLUMN since INTEGER;

-- Live daemons: each writes its heartbeat here, so `ferry trigger --wait`
-- knows whether anyone will answer and `ferry status` can list them.
CREATE TABLE ferry_daemons (
    instance      TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,
    heartbeat_at  INTEGER NOT NULL
);

-- A key whose last change was discarded (`ferry tasks discard`): its entry
-- went back to what was last written to the target, and the flag stays
-- until a later change of the key is synced, so `ferry status` can count
-- keys that may differ from the source.
ALTER TABLE ferry_ledger ADD COLUMN discarded INTEGER NOT NULL DEFAULT 0;
