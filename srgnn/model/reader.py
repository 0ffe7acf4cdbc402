"""Streaming the session-graph Parquet (docs/contracts.md) as batches for training.

:class:`GraphParquetReader` reads a Parquet file or folder with ``pyarrow.dataset``, one row
group at a time, so memory is bounded by the shuffle buffer and does not grow with the
dataset. Shuffling is seeded per epoch: the row-group order is permuted, and rows are permuted
inside a buffer of ``shuffle_buffer`` rows. The order of an epoch depends only on
``(seed, epoch)``, which is what makes a resumed training run repeat exactly the epoch an
uninterrupted run would have done.

Example::

    reader = GraphParquetReader("runs/r1/graphs/train", batch_size=100, shuffle=True, seed=7)
    for batch in reader.batches(epoch=0):
        loss = model.loss(batch)        # cross-entropy of batch.targets over all items
        scores = model(batch)           # (B, N) scores, column j is item j + 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from srgnn.data.graph import SessionGraphs
from srgnn.data.ragged import from_arrow
from srgnn.model.batching import GraphBatch, collate

__all__ = ["GraphParquetReader", "GRAPH_COLUMNS", "parquet_files"]

# Columns of the session-graph Parquet (docs/contracts.md) that training needs.
GRAPH_COLUMNS = ("nodes", "alias", "edge_src", "edge_dst", "target")


def parquet_files(*sources: str | Path) -> list[str]:
    """The Parquet files of each source (a file or a Spark output folder), sorted per source.

    Hidden files and Spark's ``_SUCCESS`` marker are skipped.

    Raises:
        FileNotFoundError: for a source that does not exist.
    """
    files: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            files.append(str(path))
        elif path.is_dir():
            files.extend(str(f) for f in sorted(path.glob("*.parquet"))
                         if not f.name.startswith((".", "_")))
        else:
            raise FileNotFoundError(f"no Parquet file or folder at {path}.")
    return files


@dataclass
class _Rows:
    """Rows of the graph Parquet held as numpy arrays: the graphs and their targets."""

    graphs: SessionGraphs
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    @classmethod
    def from_table(cls, table) -> "_Rows":
        edge_src, edge_offsets = from_arrow(table.column("edge_src"))
        graphs = SessionGraphs(*from_arrow(table.column("nodes")), *from_arrow(table.column("alias")),
                               edge_src, from_arrow(table.column("edge_dst"))[0], edge_offsets)
        return cls(graphs, table.column("target").to_numpy().astype(np.int64))


class GraphParquetReader:
    """Streams :class:`GraphBatch` objects out of a session-graph Parquet file or folder.

    Memory stays bounded: row groups are read ``read_rows`` rows at a time and at most about
    ``shuffle_buffer + read_rows`` rows are held at once, whatever the dataset's size.

    Args:
        source: a Parquet file, a folder of them (as Spark writes it; ``_SUCCESS`` and hidden
            files are ignored), or a list of files.
        batch_size: examples per batch.
        shuffle: permute row groups and rows (training); ``False`` keeps the file order
            (evaluation).
        seed: base seed; the order of epoch ``e`` is a function of ``(seed, e)`` only.
        shuffle_buffer: rows permuted together; larger mixes better and costs more memory.
        max_examples: stop an epoch after this many examples (quick runs); ``None`` = all.
        read_rows: rows per Arrow record batch read from disk.
        drop_last: drop an epoch's final batch when it is smaller than ``batch_size``.

    Raises:
        ValueError: for a non-positive size or a file without the graph columns.
        FileNotFoundError: when ``source`` holds no Parquet file (files without rows are
            fine: the reader then serves no batch).
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        batch_size: int = 100,
        *,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 1_000_000,
        max_examples: int | None = None,
        read_rows: int = 65_536,
        drop_last: bool = False,
    ) -> None:
        import pyarrow.dataset as pads

        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if shuffle_buffer < 1 or read_rows < 1:
            raise ValueError("shuffle_buffer and read_rows must be positive integers.")
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"max_examples must be positive or None, got {max_examples}.")
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"no Parquet file or folder at {path}.")
            source_arg: str | list[str] = str(path)
        else:
            source_arg = [str(p) for p in source]
        dataset = pads.dataset(source_arg, format="parquet")
        if not dataset.files:
            raise FileNotFoundError(f"no Parquet file found in {source}.")
        missing = [name for name in GRAPH_COLUMNS if name not in dataset.schema.names]
        if missing:
            raise ValueError(
                f"{source} is not a session-graph dataset: the columns {missing} are missing "
                "(see docs/contracts.md)."
            )
        # One fragment per row group: the unit the epoch order permutes. Files without rows
        # (Spark writes one for an empty split) contribute none.
        self._fragments = [
            piece for fragment in dataset.get_fragments() for piece in fragment.split_by_row_group()
        ]
        self._fragment_rows = [piece.row_groups[0].num_rows for piece in self._fragments]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.max_examples = max_examples
        self.read_rows = read_rows
        self.drop_last = drop_last

    @property
    def num_examples(self) -> int:
        """Examples served per epoch (all rows, or ``max_examples`` if smaller)."""
        rows = sum(self._fragment_rows)
        return rows if self.max_examples is None else min(rows, self.max_examples)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def __iter__(self) -> Iterator[GraphBatch]:
        return self.batches(epoch=0)

    def batches(self, epoch: int = 0) -> Iterator[GraphBatch]:
        """The batches of one epoch, in the order fixed by ``(seed, epoch)``."""
        for batch, _, _ in self._batches(epoch, None):
            yield batch

    def shard(self, epoch: int, rank: int, world_size: int) -> Iterator[tuple[GraphBatch, int, int]]:
        """Process ``rank``'s part of every batch of :meth:`batches` (``epoch``), when
        ``world_size`` processes read the same epoch (data-parallel training).

        A batch of ``n`` rows is cut into ``world_size`` consecutive parts whose sizes differ
        by at most one, in rank order, so the parts of all ranks together are that batch.
        Yields ``(batch, rows, batch_rows)``: this rank's rows, how many they are, and the
        rows of the whole batch. A rank whose part is empty (``n < world_size``) gets the
        batch's first row with ``rows = 0``, so that every rank takes every step; it must
        weigh that row by zero.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        return self._batches(epoch, (rank, world_size))

    def _batches(self, epoch: int, part: tuple[int, int] | None):
        import pyarrow as pa

        rng = np.random.default_rng([self.seed, epoch])
        fragments = len(self._fragments)
        order = rng.permutation(fragments) if self.shuffle else range(fragments)
        budget = self.num_examples
        pending: list = []  # Arrow record batches not yet served
        pending_rows = 0

        def serve(final: bool) -> Iterator[GraphBatch]:
            nonlocal pending, pending_rows, budget
            table = pa.Table.from_batches(pending)
            if self.shuffle:
                table = table.take(rng.permutation(table.num_rows))
            rows = _Rows.from_table(table)
            full = len(rows) - len(rows) % self.batch_size
            stop = len(rows) if final else full
            for start in range(0, stop, self.batch_size):
                end = min(start + self.batch_size, stop, start + budget)
                if end - start < self.batch_size and self.drop_last:
                    budget = 0  # a short batch only ever ends an epoch
                    return
                low, high = start, end
                if part is not None:  # this rank's consecutive share of the batch
                    rank, world_size = part
                    low = start + rank * (end - start) // world_size
                    high = start + (rank + 1) * (end - start) // world_size
                own = high - low
                high = max(high, low + 1)  # an empty share serves one row, weighed 0
                batch = collate(rows.graphs.slice(low, high), rows.target[low:high])
                budget -= end - start
                yield batch, own, end - start
                if budget <= 0:
                    return
            # Keep the incomplete remainder to mix it with the next rows read.
            pending = [] if final or full == table.num_rows else table.slice(full).to_batches()
            pending_rows = sum(len(b) for b in pending)

        # Without shuffling there is nothing to mix: serve as soon as rows arrive.
        threshold = self.shuffle_buffer if self.shuffle else 1
        for index in order:
            fragment = self._fragments[index]
            reads = fragment.to_batches(columns=list(GRAPH_COLUMNS), batch_size=self.read_rows)
            for record_batch in reads:
                if record_batch.num_rows == 0:
                    continue
                pending.append(record_batch)
                pending_rows += record_batch.num_rows
                if pending_rows >= threshold:
                    yield from serve(final=False)
                    if budget <= 0:
                        return
        if pending_rows:
            yield from serve(final=True)
