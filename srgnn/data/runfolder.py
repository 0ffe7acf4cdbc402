"""Reading a prepare run folder (the layout is in docs/contracts.md).

Every reader of a run folder goes through :class:`RunFolder`: training (graph splits, the
catalogue size), evaluation (held-out examples, training sessions for the baselines), the
training run's logging (``summary.json``) and the gate (which split is held out)::

    run = RunFolder("var/runs/20261128T000000Z")
    run.num_items, run.held_out_split()          # 1234, "test"
    examples = run.examples("test")              # prefixes, targets, prefix lengths
    sessions = run.sessions("train")             # item lists with their end times

A folder is complete when prepare finished it: prepare writes the marker ``_PREPARING`` before
anything else and removes it after ``summary.json``, which it writes last (write, then
rename). :meth:`RunFolder.is_complete` tells (``summary.json`` and no marker; folders written
before the marker existed are complete when they hold ``summary.json``), and every read of a
folder that still holds the marker (a prepare killed half-way, or still running) raises
:class:`~srgnn.data.inputs.InputError` naming the folder and asking to prepare it again.
Folders assembled without prepare (no marker, no ``summary.json``) stay readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from srgnn.data.inputs import InputError
from srgnn.data.ragged import from_arrow
from srgnn.data.vocab import Vocabulary, read_item_categories

__all__ = ["RunFolder", "Examples", "Sessions", "SPLITS", "CHECKPOINT_DIR", "SUMMARY",
           "IN_PROGRESS"]

SPLITS = ("train", "valid", "test")
CHECKPOINT_DIR = "model"  # training checkpoints, under the run folder
SUMMARY = "summary.json"  # prepare's counts, written last
IN_PROGRESS = "_PREPARING"  # present from the start of prepare until summary.json is written
CATEGORIES_FILE = "item_categories.parquet"  # the vocabulary's categories (optional input column)


@dataclass(frozen=True)
class Examples:
    """Examples (prefix -> next item) of one split, item indices in Arrow layout: prefix ``s``
    is ``prefix_values[prefix_offsets[s]:prefix_offsets[s + 1]]``."""

    prefix_values: np.ndarray  # (total_clicks,) int64 item indices
    prefix_offsets: np.ndarray  # (S + 1,) int64
    targets: np.ndarray  # (S,) int64 item index of the next click
    prefix_lengths: np.ndarray  # (S,) int64

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Sessions:
    """Sessions of one split, item indices in Arrow layout, with each session's last click time."""

    values: np.ndarray  # (total_clicks,) int64 item indices
    offsets: np.ndarray  # (num_sessions + 1,) int64
    end_times: np.ndarray | None  # (num_sessions,) float64 epoch seconds, or None

    def __len__(self) -> int:
        return len(self.offsets) - 1


class RunFolder:
    """A folder written by ``srgnn prepare``."""

    def __init__(self, path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- completeness ----------------------------------------------------------------------------
    def is_complete(self) -> bool:
        """Prepare finished this folder: ``summary.json`` is there and no prepare is under way."""
        return (self.path / SUMMARY).exists() and not (self.path / IN_PROGRESS).exists()

    def require_complete(self) -> "RunFolder":
        """This folder, when :meth:`is_complete`.

        Raises:
            InputError: naming the folder and asking to prepare it again.
        """
        self._refuse_unfinished()
        if not (self.path / SUMMARY).exists():
            raise InputError(f"{self.path}: not a complete prepare run folder (no {SUMMARY}); "
                             f"prepare it again (srgnn prepare --out {self.path})")
        return self

    def _refuse_unfinished(self) -> None:
        if (self.path / IN_PROGRESS).exists():
            raise InputError(f"{self.path}: incomplete run folder: a prepare began writing it and "
                             f"did not finish ({IN_PROGRESS} is there); prepare it again "
                             f"(srgnn prepare --out {self.path})")

    # -- files ---------------------------------------------------------------------------------
    def graphs(self, split: str) -> Path:
        """The session-graph Parquet folder of ``split``."""
        return self.path / "graphs" / split

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    def summary(self) -> dict:
        """``summary.json`` (``{}`` when absent)."""
        self._refuse_unfinished()
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else {}

    def write_json(self, name: str, payload: dict) -> Path:
        """Keep a step's result beside the run's data (``training.json``, ``evaluation.json``)."""
        path = self.path / name
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return path

    def read_json(self, name: str) -> dict | None:
        path = self.path / name
        return json.loads(path.read_text()) if path.exists() else None

    # -- the catalogue ---------------------------------------------------------------------------
    @cached_property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.read(self._existing(self.path / "vocab.parquet"))

    def item_categories(self):
        """(N + 1,) object array: the category of each item index from the input's
        ``category`` column (``None`` where none); ``None`` when the input had no categories
        (or the folder predates them). :func:`srgnn.data.vocab.read_item_categories`."""
        path = self.path / CATEGORIES_FILE
        return read_item_categories(path, self.vocabulary.num_items) if path.exists() else None

    @property
    def num_items(self) -> int:
        """Catalogue size ``N`` (item indices ``1..N``).

        Raises:
            ValueError: for an empty vocabulary.
        """
        if self.vocabulary.num_items == 0:
            raise ValueError(f"the vocabulary {self.path / 'vocab.parquet'} is empty.")
        return self.vocabulary.num_items

    # -- splits --------------------------------------------------------------------------------
    def count_examples(self, split: str) -> int:
        """Examples in ``graphs/<split>`` (from the Parquet footers; 0 when absent)."""
        import pyarrow.dataset as pads

        self._refuse_unfinished()
        path = self.graphs(split)
        if not path.exists():
            return 0
        return pads.dataset(path, format="parquet", exclude_invalid_files=True).count_rows()

    def held_out_split(self) -> str:
        """The split held-out figures and the gate use: ``test``, or ``valid`` when test is empty."""
        return "test" if self.count_examples("test") > 0 else "valid"

    def day_range(self, splits) -> str:
        """``"YYYY-MM-DD..YYYY-MM-DD"``: the first and last day (UTC) on which a session of
        ``splits`` ended (``""`` when none has an end time)."""
        import pyarrow.compute as pc

        days = []
        for split in splits:
            path = self.path / "sessions" / split
            if path.exists():
                end = self._read(path, ["end_ts"]).column("end_ts")
                if len(end) > end.null_count and hasattr(end.type, "unit"):
                    bounds = pc.min_max(end)
                    days += [bounds["min"].as_py(), bounds["max"].as_py()]
        if not days:
            return ""
        return f"{min(days):%Y-%m-%d}..{max(days):%Y-%m-%d}"

    def examples(self, split: str = "test") -> Examples:
        """The examples of ``graphs/<split>``: prefix, target and prefix length."""
        table = self._read(self.graphs(split), ["prefix", "target", "prefix_length"])
        values, offsets = from_arrow(table.column("prefix"))
        return Examples(
            prefix_values=values,
            prefix_offsets=offsets,
            targets=table.column("target").to_numpy().astype(np.int64),
            prefix_lengths=table.column("prefix_length").to_numpy().astype(np.int64),
        )

    def sessions(self, split: str = "train") -> Sessions:
        """The sessions of ``sessions/<split>`` as item indices, with their end times."""
        table = self._read(self.path / "sessions" / split, ["items", "end_ts"])
        values, offsets = from_arrow(table.column("items"))
        end = table.column("end_ts")
        end_times = None
        if end.null_count == 0 and hasattr(end.type, "unit"):
            import pyarrow as pa
            import pyarrow.compute as pc

            # stored ticks of any unit (time zones do not change them) -> epoch seconds
            ticks_per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[end.type.unit]
            end_times = pc.cast(end, pa.int64()).to_numpy() / ticks_per_second
        return Sessions(values=values, offsets=offsets, end_times=end_times)

    def raw_examples(self, split: str = "test"):
        """The examples of ``split`` in raw item ids: ``(prefixes, targets, prefix_lengths)``,
        ``prefixes`` a pyarrow ``list<string>`` array, ``targets`` an object array."""
        import pyarrow as pa

        examples = self.examples(split)
        vocabulary = self.vocabulary
        values = pa.array(vocabulary.ids(examples.prefix_values).astype(str), pa.string())
        if isinstance(values, pa.ChunkedArray):  # pyarrow splits a large numpy string array
            values = values.combine_chunks()
        prefixes = pa.ListArray.from_arrays(
            pa.array(examples.prefix_offsets, pa.int64()).cast(pa.int32()), values)
        return prefixes, vocabulary.ids(examples.targets), examples.prefix_lengths

    def example_times(self, split: str = "test"):
        """Click times for the examples of ``split``, laid out like :meth:`raw_examples`'
        prefixes (a pyarrow ``list<timestamp[ns]>`` array, each prefix from 0), whose gaps are
        the graphs' ``edge_gap`` (:func:`srgnn.data.graph.edge_gap_times`); ``None`` for
        graphs prepared without it."""
        import pyarrow as pa
        import pyarrow.dataset as pads

        from srgnn.data.graph import SessionGraphs, edge_gap_times

        path = self._existing(self.graphs(split))
        if "edge_gap" not in pads.dataset(str(path), format="parquet").schema.names:
            return None
        table = self._read(path, ["nodes", "alias", "edge_src", "edge_dst", "edge_gap"])
        edge_src, edge_offsets = from_arrow(table.column("edge_src"))
        alias, offsets = from_arrow(table.column("alias"))
        graphs = SessionGraphs(*from_arrow(table.column("nodes")), alias, offsets, edge_src,
                               from_arrow(table.column("edge_dst"))[0], edge_offsets,
                               from_arrow(table.column("edge_gap"), np.float32)[0])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int64()).cast(pa.int32()),
                                        pa.array(edge_gap_times(graphs), pa.timestamp("ns")))

    # -- helpers ---------------------------------------------------------------------------------
    def _existing(self, path: Path) -> Path:
        self._refuse_unfinished()
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; is {self.path} a prepare run folder?")
        return path

    def _read(self, path: Path, columns: list[str]):
        import pyarrow.parquet as pq

        return pq.read_table(self._existing(path), columns=columns)
