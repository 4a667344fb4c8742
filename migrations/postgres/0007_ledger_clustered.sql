-- SQLite's ledger became clustered by its key (WITHOUT ROWID). PostgreSQL
-- keeps a heap and its primary-key index: nothing to change.
-- (Kept so that both dialects number their migrations alike.)
SELECT 1;
