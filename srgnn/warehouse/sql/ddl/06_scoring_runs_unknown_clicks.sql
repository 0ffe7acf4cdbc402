-- scoring_runs.unknown_clicks: clicks on items the model does not know, skipped when scoring
-- (a session left with no known item gets the fallback ranking).
-- Added after the table's first release: ADD COLUMN IF NOT EXISTS upgrades a warehouse made
-- before it, and does nothing on one that has it. Older runs keep NULL. PostgreSQL has its
-- own file, which alters the table only when the column is missing.
ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS unknown_clicks BIGINT
