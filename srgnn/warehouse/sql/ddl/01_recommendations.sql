-- Top-K next-item recommendations: one row per (day, session, rank).
--
-- Written by the nightly scoring job. A day (ds) is always replaced as a whole inside one
-- transaction, so readers see either the previous version of the day or the new one.
-- PostgreSQL (and any engine without its own file); DuckDB uses 01_recommendations.duckdb.sql.
-- Applied on every connect.
CREATE TABLE IF NOT EXISTS recommendations (
    ds            DATE             NOT NULL,  -- the scored day (the DAG run's logical date)
    session_id    VARCHAR          NOT NULL,  -- raw session id, as in the clickstream
    rank          INTEGER          NOT NULL,  -- 1 = best, then 2..K
    item_id       VARCHAR          NOT NULL,  -- raw item id (not the model's dense index)
    score         DOUBLE PRECISION NOT NULL,  -- model score, non-increasing with rank
    model_name    VARCHAR          NOT NULL,  -- e.g. 'srgnn'
    model_version VARCHAR          NOT NULL,  -- e.g. 'srgnn:7', or 'fallback:pop' for sessions
                                              -- with no known item
    generated_at  TIMESTAMP        NOT NULL,  -- when the scoring run produced the row (UTC)
    CONSTRAINT recommendations_pk PRIMARY KEY (ds, session_id, rank),
    CONSTRAINT recommendations_rank_positive CHECK (rank >= 1)
);
