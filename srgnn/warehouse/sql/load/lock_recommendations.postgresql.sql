-- Serialises concurrent loads (of any day) without blocking readers: SHARE ROW EXCLUSIVE
-- conflicts with itself and with every write, but not with SELECT. Two writers of the same
-- day would otherwise both delete the old rows and then collide on the primary key.
-- Taken after staging, before the checks; held until the load's transaction ends.
-- PostgreSQL only: concurrent writers of a DuckDB file conflict at commit instead.
LOCK TABLE recommendations IN SHARE ROW EXCLUSIVE MODE
