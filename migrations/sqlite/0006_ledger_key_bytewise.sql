-- The diff strategy needs the ledger in bytewise key order. SQLite's default
-- BINARY collation already compares TEXT byte by byte: nothing to change.
-- (Kept so that both dialects number their migrations alike.)
SELECT 1;
