-- The day holds exactly expected_rows rows (sessions scored x expected K), as the scoring
-- job counted them. Returns one row when the counts differ.
-- Parameters: ds (date), expected_rows (rows the day must hold; cast, so that its type is
-- the same on every engine and driver).
SELECT COUNT(*) AS n_rows, CAST(:expected_rows AS BIGINT) AS expected_rows
FROM {table}
WHERE ds = CAST(:ds AS DATE)
HAVING COUNT(*) <> CAST(:expected_rows AS BIGINT)
