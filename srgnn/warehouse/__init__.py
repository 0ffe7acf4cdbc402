"""The warehouse: the ``recommendations`` table, the ``scoring_runs`` log and their queries
(DuckDB file or PostgreSQL).

Modules: :mod:`~srgnn.warehouse.store` (the :class:`Warehouse` and its results),
:mod:`~srgnn.warehouse.errors` (its one-line errors), :mod:`~srgnn.warehouse.engines` (the
DuckDB and PostgreSQL connections), :mod:`~srgnn.warehouse.locks` (the bounded wait for a lock
another process holds), :mod:`~srgnn.warehouse.sqlfiles` (the SQL files in ``sql/`` and their
compilation with SQLAlchemy), :mod:`~srgnn.warehouse.urls` (URL parsing and redaction),
:mod:`~srgnn.warehouse.tables` (table names, the Arrow schema, input checks) and
:mod:`~srgnn.warehouse.runlog` (the file of failed runs that ``scoring_runs`` could not take).
"""

from srgnn.warehouse.store import (DEFAULT_LOCK_WAIT_SECONDS, RECOMMENDATIONS_SCHEMA,
                                   DataQualityError, LoadResult, QueryResult, Warehouse,
                                   WarehouseError, WarehouseLoadError, WarehouseLocked,
                                   WarehouseUnavailable, WarehouseURL, redact_url)

__all__ = ["DEFAULT_LOCK_WAIT_SECONDS", "DataQualityError", "LoadResult", "QueryResult",
           "RECOMMENDATIONS_SCHEMA", "Warehouse", "WarehouseError", "WarehouseLoadError",
           "WarehouseLocked", "WarehouseURL", "WarehouseUnavailable", "redact_url"]
