-- Who holds locks on the warehouse's tables now, named in the log line of a writer waiting for
-- a lock and in the error when the wait runs out: process id, application, user, lock mode
-- and table, the strongest locks first (an AccessShareLock is a reader's). The tables are
-- found through the search_path, as the load finds them. PostgreSQL only: DuckDB names the
-- process holding its file in its own error.
SELECT a.pid, a.application_name, a.usename, l.mode, c.relname
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
JOIN pg_class AS c ON c.oid = l.relation
WHERE l.locktype = 'relation'
  AND l.granted
  AND l.pid <> pg_backend_pid()
  AND l.relation IN (to_regclass('recommendations'), to_regclass('scoring_runs'))
ORDER BY l.mode = 'AccessShareLock', a.pid, c.relname
LIMIT 3
