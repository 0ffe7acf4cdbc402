-- The day holds exactly :expected_rows rows (sessions scored x expected K), as the scoring
-- job counted them. Returns one row when the counts differ.
SELECT COUNT(*) AS n_rows, :expected_rows AS expected_rows
FROM {table}
WHERE ds = CAST(:ds AS DATE)
HAVING COUNT(*) <> :expected_rows
