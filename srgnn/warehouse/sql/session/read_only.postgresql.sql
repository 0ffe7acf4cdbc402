-- Run once on a PostgreSQL connection opened with read_only=True: every transaction of the
-- session is read-only, including the statements run in autocommit mode outside an explicit
-- transaction (queries), so such a connection cannot write even by mistake.
-- (DuckDB opens the file read-only instead.)
SET default_transaction_read_only = on
