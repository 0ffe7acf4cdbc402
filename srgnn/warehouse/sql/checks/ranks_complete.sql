-- Every scored session has exactly expected_k rows carrying the distinct ranks 1..expected_k.
-- expected_k is min(top_k, catalogue size) for the load, so a small catalogue is no violation.
-- Parameters: ds (date), expected_k (rows per session).
-- Returns one row per offending session.
SELECT
    session_id,
    COUNT(*)             AS n_rows,
    COUNT(DISTINCT rank) AS n_distinct_ranks,
    MIN(rank)            AS min_rank,
    MAX(rank)            AS max_rank
FROM {table}
WHERE ds = CAST(:ds AS DATE)
GROUP BY session_id
HAVING COUNT(*) <> :expected_k
    OR COUNT(DISTINCT rank) <> :expected_k
    OR MIN(rank) <> 1
    OR MAX(rank) <> :expected_k
ORDER BY session_id
