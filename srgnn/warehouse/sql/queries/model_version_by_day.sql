-- Which model versions served each day, and how many sessions each one served
-- (fallback rankings show up as their own version, e.g. 'fallback:pop').
-- Parameters: start_ds, end_ds (dates, both included).
SELECT
    ds,
    model_name,
    model_version,
    COUNT(DISTINCT session_id) AS sessions,
    COUNT(*)                   AS n_rows,
    MIN(generated_at)          AS generated_at
FROM recommendations
WHERE ds BETWEEN CAST(:start_ds AS DATE) AND CAST(:end_ds AS DATE)
GROUP BY ds, model_name, model_version
ORDER BY ds, sessions DESC, model_version
