"""Training speed of SR-GNN on the CPU: batching layouts, the matmul ceiling, peak memory.

For a Diginetica-size catalogue (43,097 items, the benchmark's real sessions when
``../shared/data/diginetica/train_clicks.csv.gz`` exists, sessions of
:func:`srgnn.data.samples.clustered_sessions` otherwise) and a small catalogue (the 2,000 most
clicked items of the same sessions), it trains the same model (hidden 100, batch 100,
``srgnn.training.loop.training_step`` with its fused Adam) fed several ways:

* ``block-diagonal``: the product path: graph Parquet streamed by
  ``srgnn.model.reader.GraphParquetReader`` (shuffled), vectorised ``collate``;
* ``padded (vectorised)``: the same batches turned into padded dense ``(B, n, n)`` matrices;
* ``per-session loop``: the reference implementation's batching
  (:mod:`srgnn.model.reference`): a numpy loop per session that builds the padded dense
  adjacency, from in-memory prefixes, padded to the batch's longest prefix;
* ``reference batching (L=...)``: the same loop padded, as the authors' code does, to the
  longest prefix of the whole dataset (so the alias loop and the attention run over ``L``
  positions), then this project's forward pass and loss;
* ``reference code (L=...)``: that batching, the authors' forward pass as well
  (:func:`~srgnn.model.reference.reference_code_loss`: click states gathered session by
  session, autograd loss) and their optimizer call (``torch.optim.Adam(params, lr,
  weight_decay)``, which on the CPU runs torch's per-parameter loop): the reference code end to
  end;
* ``reference code, fused Adam (L=...)``: the same with the fused Adam of every other row,
  which isolates batching and forward pass.

Every row computes in float32, except ``block-diagonal, bf16 scores`` (on CPUs with native
bfloat16, or with ``--bfloat16``): the product's default there, where the loss's three catalogue
products take bfloat16 operands (``TrainConfig.precision``); the bf16 matmul ceiling is
printed beside it.

It also times one graph-cell forward + backward per aggregation (``index_add`` on the
block-diagonal batch, ``bmm`` on the padded one, ``torch.sparse.mm`` with a COO block-diagonal
matrix) and the fp32 matmul ceiling of a training step at the scoring shape: ``(B, d) @ (d, N)``
forward plus the two backward products, ``6 * d * N`` FLOP per example (~26 MFLOP at Diginetica
size), so ``ceiling examples/s = B / time of the three products``. The machine is shared: load
averages are printed before and after.

Prints one table row per catalogue and feeding, then the graph-cell times, the ceilings, the
peak RSS and the load average at the end. Run::

    .venv/bin/python bench/bench_train_speed.py
    .venv/bin/python bench/bench_train_speed.py --batches 1000 --threads 1   # longer, 1 thread
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import DIGINETICA, machine, peak_rss_mib
from srgnn.data.ragged import counts_to_offsets, gather_lists
from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays, write_graph_parquet
from srgnn.model.batching import GraphBatch
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.reader import GraphParquetReader
from srgnn.model.reference import per_session_batches, reference_code_loss
from srgnn.training.loop import training_step

TRAIN_CLICKS = DIGINETICA / "train_clicks.csv.gz"
BF16_ROW = "block-diagonal, bf16 scores"
REFERENCE_CODE = "reference code"  # the authors' batching, forward pass and optimizer call
REFERENCE_FUSED = "reference code, fused Adam"  # the same with srgnn.training.loop's optimizer


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def diginetica_sessions(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Sessions of the CSV as (values, offsets) with items mapped to 1..N."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path)
    table = table.take(pc.sort_indices(table, [("session_id", "ascending"), ("timestamp", "ascending")]))
    _, items = np.unique(table.column("item_id").to_numpy(), return_inverse=True)
    session = table.column("session_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, session[1:] != session[:-1]])
    offsets = np.r_[starts, len(session)].astype(np.int64)
    return items.astype(np.int64) + 1, offsets, f"Diginetica train sessions ({path.name})"


def generated_sessions(num_items: int, num_sessions: int) -> tuple[np.ndarray, np.ndarray, str]:
    sessions = clustered_sessions(num_items, num_sessions, cluster_size=20, mean_length=5.0, seed=0)
    values, offsets = sessions_to_arrays(sessions)
    return values, offsets, f"generated sessions ({num_items} items)"


def keep_top_items(values, offsets, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop clicks outside the ``keep`` most clicked items, re-index them 1..keep, and drop
    sessions left with fewer than two clicks."""
    counts = np.bincount(values)
    counts[0] = 0
    top = np.argsort(-counts, kind="stable")[:keep]
    new_index = np.zeros(len(counts), dtype=np.int64)
    new_index[top] = np.arange(1, keep + 1)
    session = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    kept = new_index[values] > 0
    values, session = new_index[values][kept], session[kept]
    lengths = np.bincount(session, minlength=len(offsets) - 1)
    long_enough = (lengths >= 2)[session]
    values, session = values[long_enough], session[long_enough]
    lengths = np.bincount(session, minlength=len(offsets) - 1)
    return values, counts_to_offsets(lengths[lengths > 0])


def sample_sessions(values, offsets, count: int, seed: int = 0):
    """``count`` random sessions (all of them when there are fewer)."""
    num_sessions = len(offsets) - 1
    if count >= num_sessions:
        return values, offsets
    chosen = np.sort(np.random.default_rng(seed).choice(num_sessions, count, replace=False))
    return gather_lists(values, offsets, chosen)


# ------------------------------------------------------------------------------------------
# The reference implementation (srgnn.model.reference)
# ------------------------------------------------------------------------------------------
def check_reference_loss(prefix_values, prefix_offsets, targets, num_items: int, pad_to: int) -> None:
    """Stop unless reference_code_loss and SRGNN.loss agree on one reference batch (values and
    gradients), so that the reference code row times the same model."""
    batch = next(per_session_batches(prefix_values, prefix_offsets, targets, 100, seed=2, pad_to=pad_to))
    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=100))
    figures = []
    for loss in (reference_code_loss(model, batch), model.loss(batch)):
        loss.backward()
        figures.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
        model.zero_grad(set_to_none=True)
    (ref, ref_grads), (ours, our_grads) = figures
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(our_grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------
class TrainingRun:
    """A fresh model trained on one batch stream, timed round by round."""

    def __init__(self, batches, num_items: int, warmup: int, precision: str = "float32",
                 fused_adam: bool = True) -> None:
        # operands of the catalogue products (SRGNN.loss), or "reference code": the loss of
        # reference_code_loss and a plain autograd step
        self.precision = precision
        torch.manual_seed(0)
        self.model = SRGNN(ModelConfig(num_items=num_items, hidden_size=100))
        # fused: srgnn.training.loop's optimizer; otherwise the authors' call, torch.optim.Adam with
        # torch's default implementation (on the CPU, a loop over the parameters)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, weight_decay=1e-5,
                                          **({"fused": True} if fused_adam else {}))
        self.batches = iter(batches)
        self.rounds: list[float] = []  # examples/s of each round
        self.batch_seconds: list[float] = []
        self.step_seconds: list[float] = []
        self.run(warmup, timed=False)

    def run(self, count: int, timed: bool = True) -> None:
        examples, started_round = 0, time.perf_counter()
        for _ in range(count):
            started = time.perf_counter()
            batch = next(self.batches)
            built = time.perf_counter()
            if self.precision == "reference code":
                self.optimizer.zero_grad(set_to_none=True)
                reference_code_loss(self.model, batch).backward()
                self.optimizer.step()
            else:
                training_step(self.model, self.optimizer, batch, self.precision)
            if timed:
                self.batch_seconds.append(built - started)
                self.step_seconds.append(time.perf_counter() - built)
                examples += batch.batch_size
        if timed:
            self.rounds.append(examples / (time.perf_counter() - started_round))

    def figures(self) -> dict:
        total = sum(self.batch_seconds) + sum(self.step_seconds)
        return {
            "examples_per_second": 100 * len(self.step_seconds) / total,
            "best_round": max(self.rounds),
            "batching_ms": 1e3 * statistics.median(self.batch_seconds),
            "step_ms": 1e3 * statistics.median(self.step_seconds),
        }


def time_training(streams: dict, num_items: int, warmup: int, count: int, rounds: int) -> dict:
    """Train one model per batch stream; the streams take turns, ``rounds`` times, so that a
    burst of load from other processes hits them all alike."""
    runs = {name: TrainingRun(batches, num_items, warmup, *settings)
            for name, (batches, *settings) in streams.items()}
    for _ in range(rounds):
        for run in runs.values():
            run.run(max(count // rounds, 1))
    return {name: run.figures() for name, run in runs.items()}


def time_graph_cell(batches: list[GraphBatch], num_items: int) -> dict:
    """Median forward + backward time of one graph-cell step per aggregation method."""
    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=100))
    cell = model.gnn

    def index_add(batch):
        return cell(model.embedding(batch.node_items), batch)

    def bmm(batch):
        padded = batch.padded
        return cell(model.embedding(padded.items), padded)

    def sparse_mm(batch):
        hidden = model.embedding(batch.node_items)
        incoming = torch.sparse.mm(batch.sparse_in, cell.edge_in(hidden))
        outgoing = torch.sparse.mm(batch.sparse_out, cell.edge_out(hidden))
        return cell.update(hidden, incoming, outgoing)

    for batch in batches:  # layouts prepared outside the timing
        total = int(batch.node_offsets[-1])
        batch.padded = batch.to_padded()
        batch.sparse_in = torch.sparse_coo_tensor(
            torch.stack([batch.edge_dst, batch.edge_src]), batch.edge_weight_in, (total, total),
            check_invariants=False,
        ).coalesce()
        batch.sparse_out = torch.sparse_coo_tensor(
            torch.stack([batch.edge_src, batch.edge_dst]), batch.edge_weight_out, (total, total),
            check_invariants=False,
        ).coalesce()
    out = {}
    for name, method in (("index_add (block-diagonal)", index_add), ("bmm (padded)", bmm),
                         ("torch.sparse.mm (COO)", sparse_mm)):
        times = []
        for repeat in range(2):
            for batch in batches:
                started = time.perf_counter()
                method(batch).sum().backward()
                if repeat:
                    times.append(time.perf_counter() - started)
        model.zero_grad(set_to_none=True)
        out[name] = 1e3 * statistics.median(times)
    return out


def matmul_ceiling(num_items: int, hidden: int = 100, batch: int = 100, repeats: int = 20) -> dict:
    """The fp32 matmul ceiling of a training step at the scoring shape, two ways.

    ``single``: the FLOP rate of one ``torch.mm`` of shape ``(B, d) @ (d, N)`` (contiguous
    operands), divided into the ``6 * d * N`` FLOP per example of the forward and backward
    scoring products. ``products``: the best time of those three products as a training step
    lays them out (``F.linear`` forward, then the two backward products), per batch.
    """
    session = torch.randn(batch, hidden)
    items_by_row = torch.randn(num_items, hidden)  # the embedding table's layout
    items_by_column = torch.randn(hidden, num_items)
    grad_scores = torch.randn(batch, num_items)
    flop_per_example = 6 * hidden * num_items

    def best_seconds(function) -> float:
        for _ in range(3):
            function()
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(repeats):
                function()
            best = min(best, (time.perf_counter() - started) / repeats)
        return best

    def products():
        torch.nn.functional.linear(session, items_by_row)  # scores (B, N)
        torch.mm(grad_scores, items_by_row)  # d loss / d session (B, d)
        torch.mm(grad_scores.T, session)  # d loss / d items (N, d)

    single = best_seconds(lambda: torch.mm(session, items_by_column))
    single_gflops = 2 * batch * hidden * num_items / single / 1e9
    three = best_seconds(products)
    low_session, low_items = session.to(torch.bfloat16), items_by_column.to(torch.bfloat16)
    single_bf16 = best_seconds(lambda: torch.mm(low_session, low_items))
    return {
        "single_bf16_gflops": 2 * batch * hidden * num_items / single_bf16 / 1e9,
        "single_bf16_examples_per_second": batch / (3 * single_bf16),
        "mflop_per_example": flop_per_example / 1e6,
        "single_gflops": single_gflops,
        "single_examples_per_second": single_gflops * 1e9 / flop_per_example,
        "products_ms": 1e3 * three,
        "products_gflops": flop_per_example * batch / three / 1e9,
        "products_examples_per_second": batch / three,
    }


def step_matmul_floor(batches: list[GraphBatch], num_items: int, hidden: int = 100, repeats: int = 5) -> dict:
    """Time of the matrix products alone of one training step, at the sample batches' shapes.

    Every linear map of the model (the graph cell's in/out edge maps, input and state gates;
    the readout's key, query and output maps; the catalogue scores) costs three products per
    step: forward ``x W^T``, and backward ``g W`` and ``g^T x``. Whatever the batching, a
    training step of this model does at least this arithmetic, so ``batch / floor`` bounds the
    examples/s of any implementation on this machine. Returns the median floor in ms over the
    sample and its MFLOP.
    """
    d = hidden
    times, flops = [], []
    for batch in batches:
        nodes, size = batch.node_items.numel(), batch.targets.numel()
        shapes = [(nodes, d, d), (nodes, d, d), (nodes, 2 * d, 3 * d), (nodes, d, 3 * d),  # cell
                  (nodes, d, d), (size, d, d), (size, 2 * d, d),  # readout
                  (size, d, num_items)]  # catalogue scores
        operands = [(torch.randn(rows, fan_in), torch.randn(fan_out, fan_in), torch.randn(rows, fan_out))
                    for rows, fan_in, fan_out in shapes]

        def products():
            for x, weight, grad in operands:
                torch.nn.functional.linear(x, weight)
                torch.mm(grad, weight)
                torch.mm(grad.T, x)

        products()
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            products()
            best = min(best, time.perf_counter() - started)
        times.append(best)
        flops.append(sum(6 * rows * fan_in * fan_out for rows, fan_in, fan_out in shapes))
    return {"ms": 1e3 * statistics.median(times), "mflop": statistics.median(flops) / 1e6}


# ------------------------------------------------------------------------------------------
def _ratio(value: float) -> str:
    """``"3.2x"``, or ``"-"`` where the row it is relative to was not timed."""
    return "-" if value != value else f"{value:.1f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="timed batches per row (Diginetica)")
    parser.add_argument("--small-batches", type=int, default=300, help="timed batches per row (small)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches before each row")
    parser.add_argument("--rounds", type=int, default=10, help="turns the rows take (see time_training)")
    parser.add_argument("--sessions", type=int, default=30_000,
                        help="sessions sampled into the graph Parquet (more = longer setup)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every core")
    parser.add_argument("--small-items", type=int, default=2_000, help="size of the small catalogue")
    parser.add_argument("--skip-reference", action="store_true", help="skip the per-session loop rows")
    parser.add_argument("--catalogue", choices=("both", "large", "small"), default="both",
                        help="time the Diginetica-size catalogue, the small one, or both")
    parser.add_argument("--bfloat16", action="store_true",
                        help="time the bfloat16-scores row even where the CPU lacks native bfloat16")
    args = parser.parse_args(argv)

    threads = args.threads or len(os.sched_getaffinity(0))
    from srgnn.training.memory import retain_freed_memory
    from srgnn.cpu import native_bfloat16

    retained = retain_freed_memory()  # as srgnn.training.loop.train does, for every row alike

    bfloat16 = args.bfloat16 or native_bfloat16()
    torch.set_num_threads(threads)
    print(f"{machine()} at start; freed memory retained (srgnn.training.memory): {retained}")

    if TRAIN_CLICKS.exists():
        values, offsets, source = diginetica_sessions(TRAIN_CLICKS)
    else:
        values, offsets, source = generated_sessions(43_097, 190_000)
    print(f"data: {source}: {len(offsets) - 1:,} sessions, {len(values):,} clicks, "
          f"{int(values.max()):,} items; peak RSS after loading {peak_rss_mib():.0f} MiB")
    catalogues = [
        ("Diginetica-size", int(values.max()), values, offsets, args.batches),
        (f"small ({args.small_items:,} items)", args.small_items,
         *keep_top_items(values, offsets, args.small_items), args.small_batches),
    ]

    catalogues = [c for c, keep in zip(catalogues, ("large", "small")) if args.catalogue in ("both", keep)]

    # the scoring ceiling belongs to the Diginetica-size catalogue: measured only with it
    with_large = args.catalogue != "small"
    ceiling_before = matmul_ceiling(int(values.max())) if with_large else None
    rows, cells, floors = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-train-speed-") as scratch:
        for name, num_items, cat_values, cat_offsets, count in catalogues:
            cat_values, cat_offsets = sample_sessions(cat_values, cat_offsets, args.sessions)
            folder = write_graph_parquet(Path(scratch) / name.split()[0], (cat_values, cat_offsets))
            prefix_values, prefix_offsets, targets, _ = expand_prefixes(cat_values, cat_offsets)
            needed = (args.warmup + count) * 100
            if len(targets) < needed:
                raise SystemExit(f"{name}: {len(targets)} examples, {needed} needed; raise --sessions.")

            def reader_batches(padded: bool):
                reader = GraphParquetReader(folder, batch_size=100, shuffle=True, seed=1,
                                            shuffle_buffer=50_000)
                for batch in reader.batches(0):
                    yield batch.to_padded() if padded else batch

            # name -> (batches, operand type of the catalogue products); every row but
            # BF16_ROW computes in float32, the reference code's arithmetic.
            streams = {"block-diagonal": (reader_batches(False), "float32")}
            if bfloat16:
                streams[BF16_ROW] = (reader_batches(False), "bfloat16")
            streams["padded (vectorised)"] = (reader_batches(True), "float32")
            if not args.skip_reference:
                streams["per-session loop"] = (per_session_batches(
                    prefix_values, prefix_offsets, targets, 100, seed=1
                ), "float32")
                longest = int(np.diff(prefix_offsets).max())
                streams[f"reference batching (L={longest})"] = (per_session_batches(
                    prefix_values, prefix_offsets, targets, 100, seed=1, pad_to=longest
                ), "float32")
                streams[f"{REFERENCE_CODE} (L={longest})"] = (per_session_batches(
                    prefix_values, prefix_offsets, targets, 100, seed=1, pad_to=longest
                ), "reference code", False)
                streams[f"{REFERENCE_FUSED} (L={longest})"] = (per_session_batches(
                    prefix_values, prefix_offsets, targets, 100, seed=1, pad_to=longest
                ), "reference code")
                check_reference_loss(prefix_values, prefix_offsets, targets, num_items, longest)
            measured = time_training(streams, num_items, args.warmup, count, args.rounds)
            loop = measured.get("per-session loop", {}).get("examples_per_second")
            bases = [loop] + [next((f["examples_per_second"] for layout, f in measured.items()
                                    if layout.startswith(prefix + " (")), None)
                              for prefix in ("reference batching", REFERENCE_CODE, REFERENCE_FUSED)]
            for layout, figures in measured.items():
                rate = figures["examples_per_second"]
                speedups = tuple(rate / base if base else float("nan") for base in bases)
                rows.append((name, layout, figures, speedups))
            sample = [batch for _, batch in zip(range(50), reader_batches(False))]
            cells[name] = time_graph_cell(sample, num_items)
            floors[name] = step_matmul_floor(sample[:20], num_items)
            print(f"  measured {name}: peak RSS {peak_rss_mib():.0f} MiB")

    # The ceiling is measured before and after the training rows; the faster one counts.
    if with_large:
        after = matmul_ceiling(int(values.max()))
        ceiling = {
            key: (min if key.endswith("_ms") else max)(ceiling_before[key], after[key]) for key in after
        }
    print()
    print(f"{'catalogue':<22} {'batching':<36} {'examples/s':>11} {'best round':>11} "
          f"{'batch ms':>9} {'step ms':>8} {'vs loop':>8} {'vs ref b.':>9} {'vs ref code':>11} "
          f"{'vs ref, fused':>13}")
    for name, layout, figures, (vs_loop, vs_batching, vs_code, vs_fused) in rows:
        print(f"{name:<22} {layout:<36} {figures['examples_per_second']:>11,.0f} "
              f"{figures['best_round']:>11,.0f} {figures['batching_ms']:>9.2f} "
              f"{figures['step_ms']:>8.2f} {_ratio(vs_loop):>8} {_ratio(vs_batching):>9} "
              f"{_ratio(vs_code):>11} {_ratio(vs_fused):>13}")
    print("examples/s: over all timed batches (batch building included); best round: the fastest\n"
          "of the rounds; batch ms / step ms: medians of building one batch / of one training step;\n"
          "vs loop / vs ref b. / vs ref code / vs ref, fused: examples/s over the per-session loop\n"
          "row (padded to the batch's longest prefix), the reference batching row (padded to the\n"
          "dataset's longest prefix, as the authors' code does; this project's forward pass), the\n"
          "reference code row (that batching, the authors' forward: per-session gather loop,\n"
          "autograd loss, and their optimizer call: torch.optim.Adam with torch's default\n"
          "implementation), and the same with the fused Adam every other row uses.\n"
          f"Every row computes in float32 except '{BF16_ROW}' (the catalogue products with\n"
          "bfloat16 operands: TrainConfig.precision, 'auto' on CPUs with native bfloat16)")
    print()
    print(f"{'graph cell fwd + bwd (median ms)':<34}" + "".join(f"{n:>22}" for n in cells))
    for method in next(iter(cells.values())):
        print(f"{method:<34}" + "".join(f"{cells[n][method]:>22.2f}" for n in cells))
    print()
    if with_large:
        large = catalogues[0][0]
        measured = next(f for n, layout, f, _ in rows if n == large and layout == "block-diagonal")
        low = next((f for n, layout, f, _ in rows if n == large and layout == BF16_ROW), None)
        num_items = int(values.max())
        print(f"fp32 matmul ceiling at d = B = 100, N = {num_items:,}: "
              f"{ceiling['mflop_per_example']:.1f} MFLOP per example (forward + backward scoring)")
        for label, key in (
            (f"one torch.mm (100 x 100) @ (100 x {num_items:,}): {ceiling['single_gflops']:.0f} GFLOP/s",
             "single_examples_per_second"),
            (f"the step's 3 products: {ceiling['products_gflops']:.0f} GFLOP/s, "
             f"{ceiling['products_ms']:.1f} ms/batch", "products_examples_per_second"),
        ):
            print(f"  {label:<62} -> ceiling {ceiling[key]:>6,.0f} examples/s; block-diagonal training "
                  f"{100 * measured['examples_per_second'] / ceiling[key]:.0f}% "
                  f"(best round {100 * measured['best_round'] / ceiling[key]:.0f}%)")
        if low:
            print(f"  the '{BF16_ROW}' row: {low['examples_per_second']:,.0f} examples/s = "
                  f"{100 * low['examples_per_second'] / ceiling['single_examples_per_second']:.0f}% of the "
                  f"fp32 single-product ceiling; bf16 ceiling (one bf16 torch.mm of that shape, "
                  f"{ceiling['single_bf16_gflops']:.0f} GFLOP/s) {ceiling['single_bf16_examples_per_second']:,.0f} "
                  f"examples/s -> {100 * low['examples_per_second'] / ceiling['single_bf16_examples_per_second']:.0f}%")
        print()
    print("matrix products alone of one training step at the batches' shapes (every linear map,")
    print("forward + 2 backward products): no batching of this model can train faster than this")
    for name, floor in floors.items():
        ours = next(f for n, layout, f, _ in rows if n == name and layout == "block-diagonal")
        loop = next((f for n, layout, f, _ in rows if n == name and layout == "per-session loop"), None)
        line = (f"  {name:<20} {floor['mflop']:>5.0f} MFLOP in {floor['ms']:>5.2f} ms -> at most "
                f"{100 / floor['ms'] * 1e3:>7,.0f} examples/s; block-diagonal at "
                f"{100 * ours['examples_per_second'] * floor['ms'] / 1e5:.0f}%")
        if loop:
            line += (f"; over the per-session loop at most "
                     f"{100 / floor['ms'] * 1e3 / loop['examples_per_second']:.1f}x")
        print(line)
    print(f"peak RSS {peak_rss_mib():.0f} MiB; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
