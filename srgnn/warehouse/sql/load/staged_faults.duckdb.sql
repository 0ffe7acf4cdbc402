-- What the staged rows of Parquet files hold that the table cannot take, found before the
-- checks (canonical_table finds the same in an Arrow table): rows of another day than ds,
-- and NUL characters in text, which PostgreSQL cannot store (refused on every engine, so
-- that a day moves between them). One row of counts; all zero when the rows are fine.
-- DuckDB only: PostgreSQL receives Parquet files through canonical_table, batch by batch.
-- Parameter: ds (date).
SELECT
    COUNT(*) FILTER (WHERE ds <> CAST(:ds AS DATE)) AS other_days,
    COUNT(*) FILTER (WHERE strpos(session_id, chr(0)) > 0) AS session_id,
    COUNT(*) FILTER (WHERE strpos(item_id, chr(0)) > 0) AS item_id,
    COUNT(*) FILTER (WHERE strpos(model_name, chr(0)) > 0) AS model_name,
    COUNT(*) FILTER (WHERE strpos(model_version, chr(0)) > 0) AS model_version
FROM recommendations_staging
