-- How many distinct sessions the load's staging table holds: the run's sessions_scored when
-- the caller of Warehouse.replace_day gives none and the rows came as Parquet files (an
-- Arrow table is counted in Python). No parameter.
SELECT COUNT(DISTINCT session_id) AS sessions
FROM recommendations_staging
