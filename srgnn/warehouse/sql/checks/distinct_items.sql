-- A session is never recommended the same item twice. Returns one row per repeated item.
-- Parameter: ds (date).
SELECT session_id, item_id, COUNT(*) AS n_times
FROM {table}
WHERE ds = CAST(:ds AS DATE)
  AND item_id IS NOT NULL
GROUP BY session_id, item_id
HAVING COUNT(*) > 1
ORDER BY session_id, item_id
