-- A task's items in a table of their own (as in the SQLite store, where a
-- row is rewritten whole at each update): the task row, updated at each
-- claim, lease renewal and settlement, stays small; items are written once,
-- read at each claim and deleted with the task's completion.
CREATE TABLE ferry_task_items (
    task_id  BIGINT PRIMARY KEY,
    items    TEXT NOT NULL
);
INSERT INTO ferry_task_items (task_id, items)
    SELECT id, items FROM ferry_tasks WHERE items IS NOT NULL;
ALTER TABLE ferry_tasks DROP COLUMN items;
-- Items are read once and deleted: compressing them (pglz, the default)
-- cost more time than the bytes it saved.
ALTER TABLE ferry_task_items ALTER COLUMN items SET STORAGE EXTERNAL;
ALTER TABLE ferry_ledger SET (fillfactor = 50);
