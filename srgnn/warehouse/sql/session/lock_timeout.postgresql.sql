-- Bounds how long a statement waits for a lock, in milliseconds (PostgreSQL's lock_timeout,
-- as text; never 0, which would mean no limit). Run once when a connection opens, for the
-- session (is_local false: the whole lock wait), and with is_local true inside the load's
-- lock attempts and the DDL, for their transaction or savepoint only (a short wait per try,
-- so that each try is logged). A statement that waits longer fails with lock_not_available
-- (55P03). set_config instead of SET, since SET takes no bound parameter.
-- Parameters: lock_timeout (text, milliseconds), is_local (boolean).
SELECT set_config('lock_timeout', CAST(:lock_timeout AS TEXT), CAST(:is_local AS BOOLEAN))
