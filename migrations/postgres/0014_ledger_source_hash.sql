-- The diff's pushdown: the hash the source database computed of each
-- key's row when it was last detected. A diff whose source can hash asks
-- it for (key, hash) pairs only and reads whole rows just for keys whose
-- hash differs from this one. NULL (a key another path detected, an echo
-- mark, a discarded change): unknown, so that key's row is read and
-- compared by `detected_hash` as before.
ALTER TABLE ferry_ledger ADD COLUMN source_hash BIGINT;

-- Per bucket of a job's integer keys (`width` consecutive values), the
-- rows and the sum of `source_hash` (modulo 2^64) of the ledger's live
-- keys there, as the diff last recorded them: a bucket whose source gives
-- the same count and sum is unchanged, and its rows are not read. Any
-- other write to the job's ledger forgets them.
CREATE TABLE ferry_range_digests (
    job     TEXT NOT NULL,
    bucket  BIGINT NOT NULL,
    width   BIGINT NOT NULL,
    rows    BIGINT NOT NULL,
    sum     BIGINT NOT NULL,
    PRIMARY KEY (job, bucket)
);
-- Whether the job's last diff found most buckets changed: its next diff
-- then reads every (key, hash) at once instead of asking for the digests
-- first, which would only add their cost.
ALTER TABLE ferry_jobs ADD COLUMN digests_mostly_changed BIGINT NOT NULL DEFAULT 0;
