-- The diff strategy merges the ledger with a scan sorted in Rust, byte by
-- byte: the ledger's key order must be bytewise too, whatever the database's
-- default collation. Rebuilds the ledger's key indexes.
ALTER TABLE ferry_ledger ALTER COLUMN key TYPE TEXT COLLATE "C";
