-- Index of the run log by day: the queries/scoring_runs.sql report reads a range of days.
-- Same name as when it lived in 02_scoring_runs.sql, so existing warehouses keep theirs.
CREATE INDEX IF NOT EXISTS scoring_runs_ds_idx ON scoring_runs (ds);
