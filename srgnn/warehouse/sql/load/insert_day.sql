-- Moves the checked rows of day ds from the load's staging table into recommendations
-- (a temporary table filled by COPY on PostgreSQL, a view of the Arrow table on DuckDB; both
-- have the columns of recommendations). Runs right after delete_day.sql, in the same
-- transaction. Parameter: ds (date).
INSERT INTO recommendations
    (ds, session_id, rank, item_id, score, model_name, model_version, generated_at)
SELECT ds, session_id, rank, item_id, score, model_name, model_version, generated_at
FROM recommendations_staging
WHERE ds = CAST(:ds AS DATE)
