-- scoring_runs.unknown_clicks on PostgreSQL: clicks on items the model does not know
-- (see 06_scoring_runs_unknown_clicks.sql).
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock on the table before it looks whether the column
-- exists, so run on every connect it would wait for every open transaction that read
-- scoring_runs (an analyst's idle session) and block readers meanwhile. The block below looks
-- in the catalogue first and alters the table only when the column is missing: once, on the
-- first connect after an upgrade. One statement (a DO block).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = to_regclass('scoring_runs')
                     AND attname = 'unknown_clicks' AND NOT attisdropped) THEN
        ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS unknown_clicks BIGINT;
    END IF;
END
$$
