-- Retention looks for synced deletes; without this it scans the whole ledger on every run.
CREATE INDEX ferry_ledger_deleted ON ferry_ledger (job, key) WHERE deleted = 1;
