-- scoring_runs.clicks_read: input rows read for the day, parsed clicks and quarantined rows
-- together (clicks_read - quarantined clicks went on to sessionisation).
-- Added after the table's first release: ADD COLUMN IF NOT EXISTS upgrades a warehouse made
-- before it, and does nothing on one that has it. Older runs keep NULL. PostgreSQL has its
-- own file, which alters the table only when the column is missing.
ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS clicks_read BIGINT
