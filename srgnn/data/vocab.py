"""The item vocabulary: raw item ids <-> dense indices ``1..N`` (0 is padding).

Built by ``prepare`` from the training window and written as ``vocab.parquet`` (columns
``item_id string, item_index int32, train_clicks int64``, see docs/contracts.md); a saved
recommender carries its own copy, so that scoring maps ids exactly as training did.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["Vocabulary"]


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
