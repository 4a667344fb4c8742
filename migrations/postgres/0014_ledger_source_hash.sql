-- The diff's pushdown: the hash the source database computed of each
-- key's row when it was last detected. A diff whose source can hash asks
-- it for (key, hash) pairs only and reads whole rows just for keys whose
-- hash differs from this one. NULL (a key another path detected, an echo
-- mark, a discarded change): unknown, so that key's row is read and
-- compared by `detected_hash` as before.
ALTER TABLE ferry_ledger ADD COLUMN source_hash BIGINT;
