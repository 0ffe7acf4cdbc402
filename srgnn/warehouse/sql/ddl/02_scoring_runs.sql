-- Run log of the scoring job: one row per attempt to write a day, successful or not.
--
-- A successful run's row is written in the same transaction as the day's recommendations;
-- a failed run's row is written after the rollback, with the error in `message`.
-- A scoring run that could not open the warehouse at all is recorded in the JSON Lines file
-- <home>/logs/scoring_runs_failed.jsonl instead, with the same fields.
-- Rows are appended by load/insert_run.sql; its index on ds is 03_scoring_runs_ds_index.sql.
-- Columns added later each have their own file (04-07: ALTER TABLE ... ADD COLUMN IF NOT
-- EXISTS), which upgrades a warehouse created before them.
CREATE TABLE IF NOT EXISTS scoring_runs (
    run_id           VARCHAR          NOT NULL,  -- random hex id of the attempt
    ds               DATE             NOT NULL,  -- the day that was (to be) written
    status           VARCHAR          NOT NULL,  -- 'succeeded' or 'failed'
    model_name       VARCHAR,                    -- registered model, e.g. 'srgnn'
    model_version    VARCHAR,                    -- model used for the day, e.g. 'srgnn:7'
    sessions_in      BIGINT,                     -- active sessions read for the day
    sessions_scored  BIGINT,                     -- sessions with recommendations written
    fallbacks        BIGINT,                     -- sessions that got the fallback ranking
    quarantined      BIGINT,                     -- input rows set aside as unparseable
    expected_k       INTEGER,                    -- rows per session: min(top_k, catalogue)
    rows_written     BIGINT,                     -- rows now stored for the day
    rows_replaced    BIGINT,                     -- rows of the previous version of the day
    duration_seconds DOUBLE PRECISION,           -- started_at -> finished_at
    started_at       TIMESTAMP,                  -- UTC
    finished_at      TIMESTAMP        NOT NULL,  -- UTC
    message          VARCHAR,                    -- error text of a failed run
    CONSTRAINT scoring_runs_pk PRIMARY KEY (run_id)
);
