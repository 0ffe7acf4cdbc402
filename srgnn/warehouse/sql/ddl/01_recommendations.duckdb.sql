-- Top-K next-item recommendations: one row per (day, session, rank).
--
-- Written by the nightly scoring job. A day (ds) is always replaced as a whole inside one
-- transaction, so readers see either the previous version of the day or the new one.
-- DuckDB: the same table without the PRIMARY KEY index. DuckDB keeps such a key in an ART
-- index that it rewrites at the commit of every replaced day (about 6 s for a day of 1.2M
-- rows on 2 cores, against 0.3 s without it) and that grows with every day kept. The key
-- stays true all the same: the load's checks (sql/checks/ranks_complete.sql) reject a day in
-- which a session lacks any of the distinct ranks 1..K or has more rows, and a day is only
-- ever written whole, after its old rows are deleted, in one transaction.
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
    CONSTRAINT recommendations_rank_positive CHECK (rank >= 1)
);
