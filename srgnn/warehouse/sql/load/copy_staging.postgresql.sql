-- Receives the day's rows into the staging table as CSV over the COPY protocol (psycopg's
-- cursor.copy), written by Arrow's CSV writer: strings always quoted, so "" is an empty string
-- and an unquoted empty field is NULL. The column list is the column order of the Arrow table
-- (RECOMMENDATIONS_SCHEMA in srgnn/warehouse/tables.py), which the engine checks before
-- sending. PostgreSQL only.
COPY recommendations_staging
    (ds, session_id, rank, item_id, score, model_name, model_version, generated_at)
FROM STDIN (FORMAT csv)
