"""The item vocabulary: raw item ids <-> dense indices ``1..N`` (0 is padding).

Built by ``prepare`` from the training window and written as ``vocab.parquet`` (columns
``item_id string, item_index int32, train_clicks int64``, see docs/contracts.md); a saved
recommender carries its own copy, so that scoring maps ids exactly as training did. The same
goes for the vocabulary's categories, ``item_categories.parquet`` (``item_index int32, category
string``), read by :func:`read_item_categories` from a run folder and from a saved recommender.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["Vocabulary", "read_item_categories"]


class Vocabulary:
    """Raw ids of item indices ``1..N`` and their training clicks.

    Args:
        item_ids: (N,) raw id of each index, ``item_ids[i - 1]`` for index ``i``; unique.
        popularity: (N + 1,) training clicks per index (entry 0, padding, is 0).
    """

    def __init__(self, item_ids, popularity) -> None:
        import pandas as pd

        self.item_ids = np.asarray(item_ids, dtype=object)
        self.popularity = np.asarray(popularity, dtype=np.int64)
        if len(self.popularity) != len(self.item_ids) + 1:
            raise ValueError("popularity must have one entry per item index plus the padding entry 0.")
        self._index = pd.Index(self.item_ids.astype(str))
        if not self._index.is_unique:
            raise ValueError("raw item ids in the vocabulary must be unique.")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def indices(self, raw_ids) -> np.ndarray:
        """Raw ids -> item indices (1..N), 0 where the id is not in the vocabulary."""
        raw = np.asarray(raw_ids, dtype=object).astype(str)
        return self._index.get_indexer(raw).astype(np.int64) + 1  # get_indexer: -1 if unknown

    def ids(self, indices) -> np.ndarray:
        """Item indices (1..N) -> raw ids (object array)."""
        return self.item_ids[np.asarray(indices, dtype=np.int64) - 1]

    @classmethod
    def read(cls, path) -> "Vocabulary":
        """A ``vocab.parquet`` (file or Spark output folder).

        Raises:
            ValueError: when ``item_index`` does not run 1..N without gaps.
        """
        import pyarrow.parquet as pq

        table = pq.read_table(path).sort_by("item_index")
        index = table.column("item_index").to_numpy()
        if len(index) and not np.array_equal(index, np.arange(1, len(index) + 1)):
            raise ValueError(f"{path}: item_index must run 1..N without gaps.")
        popularity = np.zeros(len(index) + 1, dtype=np.int64)
        popularity[1:] = table.column("train_clicks").to_numpy()
        return cls(np.asarray(table.column("item_id").to_pylist(), dtype=object), popularity)

    def write(self, path) -> None:
        """Write ``vocab.parquet`` at ``path`` (a file)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({
            "item_id": pa.array(self.item_ids.astype(str), pa.string()),
            "item_index": pa.array(np.arange(1, self.num_items + 1, dtype=np.int32)),
            "train_clicks": pa.array(self.popularity[1:], pa.int64()),
        }), Path(path))


def read_item_categories(path, num_items: int) -> np.ndarray | None:
    """The category of each item index of a vocabulary of ``num_items`` items, from an
    ``item_categories.parquet`` (a file or a Spark output folder): an (N + 1,) object array,
    ``None`` where an item has no category (entry 0 is the padding item); ``None`` when the
    file holds no rows (the input had no ``category`` column).

    Raises:
        ValueError: when an item index is outside ``1..num_items``.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if table.num_rows == 0:
        return None
    index = table.column("item_index").to_numpy().astype(np.int64)
    if index.min() < 1 or index.max() > num_items:
        raise ValueError(f"{path}: item indices outside the vocabulary.")
    categories = np.full(num_items + 1, None, dtype=object)
    categories[index] = table.column("category").to_numpy(zero_copy_only=False)
    return categories
