-- The scoring job's attempts between two days, newest first, failures included.
-- Parameters: start_ds, end_ds (dates, both included).
SELECT
    ds, status, model_name, model_version, sessions_in, sessions_scored, fallbacks,
    quarantined, expected_k, rows_written, rows_replaced, duration_seconds, started_at,
    finished_at, message, run_id
FROM scoring_runs
WHERE ds BETWEEN CAST(:start_ds AS DATE) AND CAST(:end_ds AS DATE)
ORDER BY ds DESC, finished_at DESC
