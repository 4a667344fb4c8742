-- A task's items in a table of their own. The task row is updated at each
-- claim, lease renewal and settlement, and SQLite rewrites a row whole at an
-- update: with its items inline, that was a megabyte (5,000 items) read and
-- written again each time. Items are now written once, read at each claim
-- and deleted with the task's completion (bench/NOTES.md).
CREATE TABLE ferry_task_items (
    task_id  INTEGER PRIMARY KEY,
    items    TEXT NOT NULL
);
INSERT INTO ferry_task_items (task_id, items)
    SELECT id, items FROM ferry_tasks WHERE items IS NOT NULL;
ALTER TABLE ferry_tasks DROP COLUMN items;
