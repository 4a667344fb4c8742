-- SQLite's ledger became clustered by its key (WITHOUT ROWID); PostgreSQL
-- keeps a heap and its primary-key index. Both lose `seen_run`: the diff
-- finds deletes by merging the sorted scan with the ledger, not by marking
-- every key it saw.
ALTER TABLE ferry_ledger DROP COLUMN seen_run;
