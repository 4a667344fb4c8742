-- Whether a task may hold items that a later detection superseded. Only such
-- tasks look their keys up in the ledger before writing; 1 (look) is the
-- safe value for tasks written before this column existed.
ALTER TABLE ferry_tasks ADD COLUMN stale_check INTEGER NOT NULL DEFAULT 1;
