-- No row lacks a value: item, session, rank, score (NaN counts as missing), model or timestamp.
-- Returns the offending rows.
-- Parameter: ds (date).
SELECT session_id, rank, item_id, score, model_version
FROM {table}
WHERE ds = CAST(:ds AS DATE)
  AND (   item_id IS NULL
       OR session_id IS NULL
       OR rank IS NULL
       OR score IS NULL
       OR score = CAST('NaN' AS DOUBLE PRECISION)  -- NaN equals NaN on both engines
       OR model_name IS NULL
       OR model_version IS NULL
       OR generated_at IS NULL)
ORDER BY session_id, rank
