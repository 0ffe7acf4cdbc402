-- The recommendations of one session on one day, best first.
-- Parameters: ds (date), session_id (raw session id).
SELECT rank, item_id, score, model_name, model_version, generated_at
FROM recommendations
WHERE ds = CAST(:ds AS DATE)
  AND session_id = :session_id
ORDER BY rank
