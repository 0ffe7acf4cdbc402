-- The scoring job's attempts between two days, newest first, failures included.
-- What a run read and dropped: clicks_read (input rows) = clicks parsed + quarantined; of the
-- parsed clicks, duplicates_dropped exact duplicates were removed and unknown_clicks were on
-- items the model does not know. category_fallbacks of the fallbacks were sessions whose last
-- click is on an unknown item of a known category. NULL in runs logged before these columns
-- existed.
-- Parameters: start_ds, end_ds (dates, both included).
SELECT
    ds, status, model_name, model_version, clicks_read, quarantined, duplicates_dropped,
    unknown_clicks, sessions_in, sessions_scored, fallbacks, category_fallbacks, expected_k,
    rows_written, rows_replaced, duration_seconds, started_at, finished_at, message, run_id
FROM scoring_runs
WHERE ds BETWEEN CAST(:start_ds AS DATE) AND CAST(:end_ds AS DATE)
ORDER BY ds DESC, finished_at DESC
