-- Every recommendation row of one day (exports, audits). Parameter: ds (date).
SELECT session_id, rank, item_id, score, model_name, model_version, generated_at
FROM recommendations
WHERE ds = CAST(:ds AS DATE)
ORDER BY session_id, rank
