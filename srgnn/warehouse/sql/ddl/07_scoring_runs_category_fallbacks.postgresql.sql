-- scoring_runs.category_fallbacks on PostgreSQL: sessions answered with the popular items of
-- their last click's category (see 07_scoring_runs_category_fallbacks.sql).
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock on the table before it looks whether the column
-- exists, so run on every connect it would wait for every open transaction that read
-- scoring_runs and block readers meanwhile. The block below looks in the catalogue first and
-- alters the table only when the column is missing: once, on the first connect after an
-- upgrade. One statement (a DO block).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = to_regclass('scoring_runs')
                     AND attname = 'category_fallbacks' AND NOT attisdropped) THEN
        ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS category_fallbacks BIGINT;
    END IF;
END
$$
