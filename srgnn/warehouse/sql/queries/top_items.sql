-- The day's most recommended items: how many sessions got each item, and at which ranks.
-- Parameters: ds (date), limit (number of items).
SELECT
    item_id,
    COUNT(*)                                AS times_recommended,
    MIN(rank)                               AS best_rank,
    AVG(CAST(rank AS DOUBLE PRECISION))     AS mean_rank
FROM recommendations
WHERE ds = CAST(:ds AS DATE)
GROUP BY item_id
ORDER BY times_recommended DESC, mean_rank, item_id
LIMIT :limit
