-- A more compact ledger. What ferry last wrote for each key is kept as
-- bytes rather than their hex text (the ledger's largest column halves),
-- and `synced_hash` is NULL where it equals `detected_hash`, as it does for
-- every key whose last change is synced (a key with a NULL
-- `synced_version` was never synced). One rewrite of the table for both.
ALTER TABLE ferry_ledger
    ALTER COLUMN written TYPE bytea USING decode(written, 'hex'),
    ALTER COLUMN synced_hash TYPE bigint
        USING CASE WHEN synced_hash = detected_hash AND synced_version IS NOT NULL THEN NULL ELSE synced_hash END;
