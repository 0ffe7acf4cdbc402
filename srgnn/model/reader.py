"""Streaming the session-graph Parquet (docs/contracts.md) as batches for training.

:class:`GraphParquetReader` reads a Parquet file or folder with ``pyarrow.dataset``, one row
group at a time, so memory is bounded by the shuffle buffer and does not grow with the
dataset. Shuffling is seeded per epoch: the row-group order is permuted, and rows are permuted
inside a buffer of ``shuffle_buffer`` rows. The order of an epoch depends only on
``(seed, epoch)``, which is what makes a resumed training run repeat exactly the epoch an
uninterrupted run would have done.

Data-parallel training (``part=(rank, world_size)``, :meth:`GraphParquetReader.part_of`):
rank ``r`` of ``N`` owns the consecutive examples ``[r * n // N, (r + 1) * n // N)`` of the
split in file and row order, reads only the row groups that hold them, shuffles them by
``(seed, epoch, rank)`` and serves local batches of its share of ``batch_size``
(:meth:`GraphParquetReader.steps`).

Example::

    reader = GraphParquetReader("runs/r1/graphs/train", batch_size=100, shuffle=True, seed=7)
    for batch in reader.batches(epoch=0):
        loss = model.loss(batch)        # cross-entropy of batch.targets over all items
        scores = model(batch)           # (B, N) scores, column j is item j + 1
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from srgnn.data.graph import SessionGraphs
from srgnn.data.ragged import from_arrow
from srgnn.model.batching import GraphBatch, collate

__all__ = ["GraphParquetReader", "GRAPH_COLUMNS", "OPTIONAL_COLUMNS", "parquet_files"]

# Columns of the session-graph Parquet (docs/contracts.md) that training needs.
GRAPH_COLUMNS = ("nodes", "alias", "edge_src", "edge_dst", "target")
# Columns that later prepares write and the readers supply when a folder has them
# (GraphBatch.edge_gap, GraphBatch.remaining, GraphBatch.returns); older folders lack them.
OPTIONAL_COLUMNS = ("edge_gap", "remaining", "returns")


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
    remaining: np.ndarray | None = None
    returns: np.ndarray | None = None  # float32, NaN where the label is unknown

    def __len__(self) -> int:
        return len(self.target)

    @classmethod
    def from_table(cls, table) -> "_Rows":
        names = table.schema.names
        edge_src, edge_offsets = from_arrow(table.column("edge_src"))
        edge_gap = (from_arrow(table.column("edge_gap"), np.float32)[0]
                    if "edge_gap" in names else None)
        graphs = SessionGraphs(*from_arrow(table.column("nodes")), *from_arrow(table.column("alias")),
                               edge_src, from_arrow(table.column("edge_dst"))[0], edge_offsets,
                               edge_gap)
        remaining = (table.column("remaining").to_numpy().astype(np.float32)
                     if "remaining" in names else None)
        import pyarrow as pa
        import pyarrow.compute as pc

        returns = (pc.fill_null(table.column("returns").cast(pa.float32()), float("nan"))
                   .to_numpy() if "returns" in names else None)
        return cls(graphs, table.column("target").to_numpy().astype(np.int64), remaining, returns)

    def collate(self, low: int, high: int) -> GraphBatch:
        """The batch of rows ``low:high``."""
        remaining = None if self.remaining is None else self.remaining[low:high]
        returns = None if self.returns is None else self.returns[low:high]
        return collate(self.graphs.slice(low, high), self.target[low:high], remaining, returns)


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
        part: ``(rank, world_size)``: serve only this rank's part of the split (the module
            docstring); ``batch_size`` and ``max_examples`` stay the global figures.

    Raises:
        ValueError: for a non-positive size, a file without the graph columns, or a part that
            the batch cannot be shared by.
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
        part: tuple[int, int] | None = None,
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
        self._dataset = dataset
        if not dataset.files:
            raise FileNotFoundError(f"no Parquet file found in {source}.")
        missing = [name for name in GRAPH_COLUMNS if name not in dataset.schema.names]
        # what every batch reads: the graph columns and the optional ones the folder has
        self.columns = list(GRAPH_COLUMNS) + [
            name for name in OPTIONAL_COLUMNS if name in dataset.schema.names]
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
        self.rows_read = 0  # rows taken out of the Parquet so far, all epochs together
        self.part: tuple[int, int] | None = None
        # (fragment, first row, end row): what an epoch reads; the whole row groups here.
        self._pieces = [(index, 0, rows) for index, rows in enumerate(self._fragment_rows)]
        self._placeholder: GraphBatch | None = None
        if part is not None:
            self._take_part(*part)

    def has_column(self, name: str) -> bool:
        """Whether the Parquet holds the optional column ``name`` (:data:`OPTIONAL_COLUMNS`)."""
        return name in self.columns

    def known_values(self, name: str) -> int:
        """How many rows hold a value (not null) in the optional column ``name``: 0 when the
        Parquet lacks the column. Reads that one column of every row."""
        if not self.has_column(name):
            return 0
        column = self._dataset.to_table(columns=[name]).column(name)
        return len(column) - column.null_count

    def part_of(self, rank: int, world_size: int) -> "GraphParquetReader":
        """This reader restricted to rank ``rank`` of ``world_size`` (the ``part`` argument)."""
        reader = copy.copy(self)
        reader.rows_read = 0
        reader._take_part(rank, world_size)
        return reader

    def _take_part(self, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        if self.batch_size < world_size:
            raise ValueError(f"a batch of {self.batch_size} examples cannot be shared by "
                             f"{world_size} processes: use a batch size of at least {world_size}.")
        if self.drop_last:
            raise ValueError("a reader of part of the split serves every batch: no drop_last.")
        rows = sum(self._fragment_rows)
        low, high = rows * rank // world_size, rows * (rank + 1) // world_size
        pieces, start = [], 0
        for index, count in enumerate(self._fragment_rows):
            first, end = max(low - start, 0), min(high - start, count)
            if first < end:
                pieces.append((index, first, end))
            start += count
        self._pieces, self.part = pieces, (rank, world_size)

    def _shares(self) -> tuple[list[int], list[int]]:
        """Per rank of the part: examples served per epoch, and rows of a local batch."""
        rank, world_size = self.part
        held = _cut(sum(self._fragment_rows), world_size)
        wanted = sum(held) if self.max_examples is None else min(sum(held), self.max_examples)
        served = [min(h, w) for h, w in zip(held, _cut(wanted, world_size))]
        for index in range(world_size):  # a share beyond a rank's rows (rare) goes to others
            served[index] += min(wanted - sum(served), held[index] - served[index])
        return served, _cut(self.batch_size, world_size)

    @property
    def num_examples(self) -> int:
        """Examples served per epoch (all rows, or ``max_examples`` if smaller); with a
        ``part``, this rank's share of them."""
        if self.part is not None:
            return self._shares()[0][self.part[0]]
        rows = sum(self._fragment_rows)
        return rows if self.max_examples is None else min(rows, self.max_examples)

    def __len__(self) -> int:
        """Batches per epoch; with a ``part``, the steps of every rank (the most any needs)."""
        if self.part is not None:
            served, sizes = self._shares()
            return max(math.ceil(e / s) for e, s in zip(served, sizes))
        if self.drop_last:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def __iter__(self) -> Iterator[GraphBatch]:
        return self.batches(epoch=0)

    def batches(self, epoch: int = 0) -> Iterator[GraphBatch]:
        """The batches of one epoch, in the order fixed by ``(seed, epoch)`` (with a ``part``,
        this rank's local batches, without the placeholder rows of :meth:`steps`)."""
        for batch, rows, _ in self.steps(epoch):
            if rows:
                yield batch

    def steps(self, epoch: int = 0) -> Iterator[tuple[GraphBatch, int, int]]:
        """``(batch, rows, step_rows)`` for every step of ``epoch``: the batch, its rows, and
        the rows of the whole step over all ranks (``rows`` without a ``part``).

        With a ``part``, rank ``r`` serves ``batch_size * (r + 1) // N - batch_size * r // N``
        rows a step out of its shuffled part (fewer once it runs out), and every rank takes
        ``len(self)`` steps: a rank without rows left serves the split's first row with
        ``rows = 0``, which it must weigh by zero.
        """
        if self.part is None:
            for batch, rows, _ in self._batches(epoch, None):
                yield batch, rows, rows
            return
        served, sizes = self._shares()
        steps = 0
        for steps, (batch, rows, _) in enumerate(self._batches(epoch, None), 1):
            yield batch, rows, _step_rows(served, sizes, steps - 1)
        for step in range(steps, len(self)):
            yield self._first_row(), 0, _step_rows(served, sizes, step)

    def _first_row(self) -> GraphBatch:
        if self._placeholder is None:
            index = next(i for i, rows in enumerate(self._fragment_rows) if rows)
            table = self._fragments[index].head(1, columns=self.columns)
            self.rows_read += table.num_rows
            self._placeholder = _Rows.from_table(table).collate(0, table.num_rows)
        return self._placeholder

    def shard(self, epoch: int, rank: int, world_size: int) -> Iterator[tuple[GraphBatch, int, int]]:
        """Process ``rank``'s part of every batch of :meth:`batches` (``epoch``), when
        ``world_size`` processes read the same epoch (data-parallel validation).

        A batch of ``n`` rows is cut into ``world_size`` consecutive parts whose sizes differ
        by at most one, in rank order, so the parts of all ranks together are that batch.
        Yields ``(batch, rows, batch_rows)``: this rank's rows, how many they are, and the
        rows of the whole batch. A rank whose part is empty (``n < world_size``) gets the one
        row of the batch where its part would start (row ``rank * n // world_size``) with
        ``rows = 0``, so that every rank takes every step; it must weigh that row by zero.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}.")
        return self._batches(epoch, (rank, world_size))

    def _batches(self, epoch: int, cut: tuple[int, int] | None):
        import pyarrow as pa

        if self.part is None:
            rng = np.random.default_rng([self.seed, epoch])
            size = self.batch_size
        else:
            rng = np.random.default_rng([self.seed, epoch, self.part[0]])
            size = _cut(self.batch_size, self.part[1])[self.part[0]]
        pieces = len(self._pieces)
        order = rng.permutation(pieces) if self.shuffle else range(pieces)
        budget = self.num_examples
        if budget <= 0:
            return
        pending: list = []  # Arrow record batches not yet served
        pending_rows = 0

        def serve(final: bool) -> Iterator[GraphBatch]:
            nonlocal pending, pending_rows, budget
            table = pa.Table.from_batches(pending)
            if self.shuffle:
                table = table.take(rng.permutation(table.num_rows))
            rows = _Rows.from_table(table)
            full = len(rows) - len(rows) % size
            stop = len(rows) if final else full
            for start in range(0, stop, size):
                end = min(start + size, stop, start + budget)
                if end - start < size and self.drop_last:
                    budget = 0  # a short batch only ever ends an epoch
                    return
                low, high = start, end
                if cut is not None:  # this rank's consecutive share of the batch
                    rank, world_size = cut
                    low = start + rank * (end - start) // world_size
                    high = start + (rank + 1) * (end - start) // world_size
                own = high - low
                high = max(high, low + 1)  # an empty share serves one row, weighed 0
                batch = rows.collate(low, high)
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
            fragment, first, end = self._pieces[index]
            reads = self._fragments[fragment].to_batches(columns=self.columns,
                                                         batch_size=self.read_rows)
            offset = 0  # of the record batch in the row group
            for record_batch in reads:
                count = record_batch.num_rows
                self.rows_read += count
                low, high = max(first - offset, 0), min(end - offset, count)
                offset += count
                if low >= high:
                    continue
                if high - low < count:  # the row group at an end of a part
                    record_batch = record_batch.slice(low, high - low)
                pending.append(record_batch)
                pending_rows += record_batch.num_rows
                if pending_rows >= threshold:
                    yield from serve(final=False)
                    if budget <= 0:
                        return
                if offset >= end:
                    break
        if pending_rows:
            yield from serve(final=True)


def _cut(count: int, parts: int) -> list[int]:
    """``count`` cut into ``parts`` consecutive shares whose sizes differ by at most one."""
    return [count * (p + 1) // parts - count * p // parts for p in range(parts)]


def _step_rows(served: Sequence[int], sizes: Sequence[int], step: int) -> int:
    """The rows of step ``step`` over all ranks, which serve ``sizes`` rows a step until they
    have served ``served`` rows."""
    return sum(min(max(e - step * s, 0), s) for e, s in zip(served, sizes))
