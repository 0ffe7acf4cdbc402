-- How many rows day ds holds: before a load (the rows it replaces) and after it (the rows it
-- wrote). Parameter: ds (date).
SELECT COUNT(*) AS n_rows
FROM recommendations
WHERE ds = CAST(:ds AS DATE)
