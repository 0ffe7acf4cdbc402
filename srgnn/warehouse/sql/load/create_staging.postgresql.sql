-- The load's staging table: an empty copy of recommendations (same columns and types, no
-- constraints), visible to this connection only and dropped when the load's transaction ends,
-- by commit or rollback. copy_staging.postgresql.sql fills it, the checks read it and
-- insert_day.sql moves its rows. PostgreSQL only: DuckDB registers the Arrow table itself
-- under the same name.
CREATE TEMPORARY TABLE recommendations_staging ON COMMIT DROP AS
SELECT * FROM recommendations WITH NO DATA
