-- Appends one attempt of the scoring job to the run log (columns: ddl/02_scoring_runs.sql and
-- the columns added by ddl/04-07).
-- A successful load writes it in its own transaction; a failed one after the rollback, and
-- Warehouse.log_run for runs that wrote nothing. Parameters: one per column, same names.
INSERT INTO scoring_runs (
    run_id, ds, status, model_name, model_version, sessions_in, sessions_scored, fallbacks,
    quarantined, expected_k, rows_written, rows_replaced, duration_seconds, started_at,
    finished_at, message, clicks_read, duplicates_dropped, unknown_clicks, category_fallbacks
) VALUES (
    :run_id, :ds, :status, :model_name, :model_version, :sessions_in, :sessions_scored,
    :fallbacks, :quarantined, :expected_k, :rows_written, :rows_replaced, :duration_seconds,
    :started_at, :finished_at, :message, :clicks_read, :duplicates_dropped, :unknown_clicks,
    :category_fallbacks
)
