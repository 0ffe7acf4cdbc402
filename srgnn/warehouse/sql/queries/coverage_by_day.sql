-- Catalogue coverage per day: how many distinct items the day's recommendations use.
-- Parameters: start_ds, end_ds (dates, both included).
SELECT
    ds,
    COUNT(DISTINCT session_id) AS sessions,
    COUNT(*)                   AS n_rows,
    COUNT(DISTINCT item_id)    AS distinct_items
FROM recommendations
WHERE ds BETWEEN CAST(:start_ds AS DATE) AND CAST(:end_ds AS DATE)
GROUP BY ds
ORDER BY ds
