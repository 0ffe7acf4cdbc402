-- Removes the stored version of day ds, inside the load's transaction: after the checks
-- passed on the staged rows and before insert_day.sql writes them, so that a rerun never
-- duplicates a day and no reader ever sees it half written. Parameter: ds (date).
DELETE FROM recommendations
WHERE ds = CAST(:ds AS DATE)
