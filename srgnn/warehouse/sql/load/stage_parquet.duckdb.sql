-- The load's staging rows when they come as Parquet files (Warehouse.replace_day given a
-- folder or a list of files): DuckDB reads the files itself; this query is registered as a
-- temporary view named recommendations_staging, which the checks and insert_day.sql scan.
-- It gives the columns and types of recommendations, as canonical_table does for an Arrow
-- table: a column the files hold is cast, an optional one they lack (has_<column> false)
-- takes the run's value. The empty row set typed below gives every optional column a name,
-- so that the query binds whichever of them the files hold (UNION ALL BY NAME fills the
-- others with NULL). Other columns of the files (a scoring job's counts) are not read.
-- Parameters: files (list of paths), ds (date), model_name, model_version, generated_at, and
-- has_ds, has_model_name, has_model_version, has_generated_at, generated_at_aware (booleans;
-- the last: the files' generated_at has a time zone).
SELECT
    CASE WHEN :has_ds THEN CAST(ds AS DATE) ELSE CAST(:ds AS DATE) END AS ds,
    CAST(session_id AS VARCHAR) AS session_id,
    CAST(rank AS INTEGER) AS rank,
    CAST(item_id AS VARCHAR) AS item_id,
    CAST(score AS DOUBLE) AS score,
    CASE WHEN :has_model_name THEN CAST(model_name AS VARCHAR)
         ELSE CAST(:model_name AS VARCHAR) END AS model_name,
    CASE WHEN :has_model_version THEN CAST(model_version AS VARCHAR)
         ELSE CAST(:model_version AS VARCHAR) END AS model_version,
    CASE WHEN NOT :has_generated_at THEN CAST(:generated_at AS TIMESTAMP)
         -- an aware timestamp is stored as its UTC wall time, whatever the session's zone
         WHEN :generated_at_aware THEN timezone('UTC', CAST(generated_at AS TIMESTAMPTZ))
         ELSE CAST(generated_at AS TIMESTAMP) END AS generated_at
FROM (
    SELECT
        CAST(NULL AS DATE) AS ds,
        CAST(NULL AS VARCHAR) AS model_name,
        CAST(NULL AS VARCHAR) AS model_version,
        CAST(NULL AS TIMESTAMP) AS generated_at
    WHERE false
    UNION ALL BY NAME
    SELECT * FROM read_parquet(:files, union_by_name = true)
) AS files
