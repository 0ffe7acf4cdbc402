-- How many distinct sessions day ds holds: Warehouse.check_day expects that many times
-- expected_k rows when the caller gives no row count. Parameter: ds (date).
SELECT COUNT(DISTINCT session_id) AS sessions
FROM recommendations
WHERE ds = CAST(:ds AS DATE)
