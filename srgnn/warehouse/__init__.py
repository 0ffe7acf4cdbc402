"""The warehouse: the ``recommendations`` table, the ``scoring_runs`` log and their queries
(DuckDB file or PostgreSQL).

Modules: :mod:`~srgnn.warehouse.store` (the :class:`Warehouse`, its errors and results),
:mod:`~srgnn.warehouse.engines` (the DuckDB and PostgreSQL connections),
:mod:`~srgnn.warehouse.sqlfiles` (the SQL files in ``sql/`` and their compilation with
SQLAlchemy), :mod:`~srgnn.warehouse.urls` (URL parsing and redaction) and
:mod:`~srgnn.warehouse.tables` (table names, the Arrow schema, input checks).
"""

from srgnn.warehouse.store import (RECOMMENDATIONS_SCHEMA, DataQualityError, LoadResult,
                                   QueryResult, Warehouse, WarehouseError, WarehouseURL,
                                   redact_url)

__all__ = ["DataQualityError", "LoadResult", "QueryResult", "RECOMMENDATIONS_SCHEMA", "Warehouse",
           "WarehouseError", "WarehouseURL", "redact_url"]
