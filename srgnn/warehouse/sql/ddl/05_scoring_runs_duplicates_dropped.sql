-- scoring_runs.duplicates_dropped: exact duplicate clicks removed before scoring (same
-- session, time, item, user and event type; the first one is kept).
-- Added after the table's first release: ADD COLUMN IF NOT EXISTS upgrades a warehouse made
-- before it, and does nothing on one that has it. Older runs keep NULL. PostgreSQL has its
-- own file, which alters the table only when the column is missing.
ALTER TABLE scoring_runs ADD COLUMN IF NOT EXISTS duplicates_dropped BIGINT
