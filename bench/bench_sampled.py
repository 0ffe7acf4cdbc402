"""Full vs sampled softmax: training speed on large generated catalogues, accuracy on Diginetica.

    .venv/bin/python bench/bench_sampled.py                          # both parts
    .venv/bin/python bench/bench_sampled.py --skip-accuracy          # speed only
    .venv/bin/python bench/bench_sampled.py --skip-speed --epochs 2 --max-examples 150000

**Speed.** For each catalogue size (``--items``, default 100,000 and 1,000,000) it generates
sessions whose items follow a Zipf law over the catalogue, builds their batches up front
(``--batch-size`` 100, hidden size ``--hidden-size`` 100), and times
:func:`srgnn.training.loop.training_step` with the optimizer :func:`_make_optimizer` gives each
loss: the full cross-entropy with fused Adam, and sampled softmax (``--negatives`` shared
negatives from the batches' target counts, log-Q corrected) with lazy Adam. A few warm-up steps
are not timed. Examples/s counts the step only (batches are ready), so it is the part that
the loss changes.

**Accuracy.** prepares Diginetica as bench/bench_accuracy.py does (``--valid-days 3``, reused
from ``--run-dir`` when it has summary.json), trains with each loss under the same settings
(``--epochs``, ``--max-examples`` per epoch, epoch chosen on the validation split, which is
ranked over every item in both cases), and scores the published 60,858 test prefixes through
the one evaluation path. Diginetica has 43,097 items, under the automatic threshold, so the
sampled run sets ``softmax="sampled"`` explicitly.

Prints the tables and the machine (cores, load average: the benchmark shares the cores with
whatever else runs). Writes under ``--home`` (default ``var/bench/sampled``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import DIGINETICA, ROOT, machine, text_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="*", default=[100_000, 1_000_000],
                   help="catalogue sizes of the speed part")
    p.add_argument("--hidden-size", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--negatives", type=int, default=2048)
    p.add_argument("--full-steps", type=int, default=40, help="timed steps of the full loss")
    p.add_argument("--sampled-steps", type=int, default=300, help="timed steps of sampled softmax")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all usable cores)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--data", type=Path, default=DIGINETICA)
    p.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "sampled")
    p.add_argument("--run-dir", type=Path, default=None)
    p.add_argument("--valid-days", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=150_000, help="training examples per epoch")
    p.add_argument("--max-valid-examples", type=int, default=None)
    p.add_argument("--accuracy-negatives", type=int, nargs="*", default=None,
                   help="negatives of the sampled runs on Diginetica (default: --negatives)")
    p.add_argument("--losses", nargs="*", default=["full", "sampled"], choices=["full", "sampled"],
                   help="the trainings of the accuracy part (two processes can share them out)")
    p.add_argument("--k", type=int, default=20)
    return p.parse_args(argv)


def generated_batches(num_items: int, count: int, batch_size: int, seed: int = 0):
    """``count`` training batches of generated sessions (2-10 clicks, Zipf(1.1) items)."""
    from srgnn.data.graph import build_graphs
    from srgnn.model.batching import collate

    rng = np.random.default_rng(seed)
    examples = count * batch_size
    lengths = rng.integers(2, 11, size=examples)  # one example (its last click the target) each
    ranks = rng.zipf(1.1, size=int(lengths.sum()))
    items = (rng.permutation(num_items)[(ranks - 1) % num_items] + 1).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    batches = []
    for b in range(count):
        first, last = offsets[b * batch_size], offsets[(b + 1) * batch_size]
        session_offsets = offsets[b * batch_size : (b + 1) * batch_size + 1] - first
        values = items[first:last]
        prefix_ends = session_offsets[1:] - 1  # every session's prefix: all but its last click
        prefix_values = np.concatenate([values[s:e] for s, e in zip(session_offsets[:-1], prefix_ends)])
        prefix_offsets = np.concatenate([[0], np.cumsum(prefix_ends - session_offsets[:-1])])
        batches.append(collate(build_graphs(prefix_values, prefix_offsets), values[prefix_ends]))
    return batches


def time_steps(model, optimizer, batches, steps: int, warmup: int, sampler=None) -> float:
    """Examples/s of ``steps`` training steps after ``warmup`` untimed ones."""
    from srgnn.training.loop import training_step

    for batch in batches[:warmup]:
        training_step(model, optimizer, batch, "float32", sampler)
    timed = batches[warmup : warmup + steps]
    started = time.perf_counter()
    for batch in timed:
        training_step(model, optimizer, batch, "float32", sampler)
    seconds = time.perf_counter() - started
    return sum(b.batch_size for b in timed) / seconds


def speed(args) -> list[list[str]]:
    import torch

    from srgnn.config import TrainConfig
    from srgnn.model.network import SRGNN, ModelConfig
    from srgnn.model.sampled import NegativeSampler
    from srgnn.training.loop import _make_optimizer

    config = TrainConfig(hidden_size=args.hidden_size, batch_size=args.batch_size,
                         negatives=args.negatives)
    rows = []
    for num_items in args.items:
        count = args.warmup + max(args.full_steps, args.sampled_steps)
        batches = generated_batches(num_items, count, args.batch_size)
        targets = torch.cat([b.targets for b in batches]).numpy()
        rates = {}
        for softmax in ("full", "sampled"):
            torch.manual_seed(0)
            model = SRGNN(ModelConfig(num_items=num_items, hidden_size=args.hidden_size))
            optimizer = _make_optimizer(model, config, softmax)
            sampler = None
            if softmax == "sampled":
                sampler = NegativeSampler.from_counts(
                    np.bincount(targets, minlength=num_items + 1), args.negatives)
                sampler.reseed(0, 1)
            steps = args.full_steps if softmax == "full" else args.sampled_steps
            rates[softmax] = time_steps(model, optimizer, batches, steps, args.warmup, sampler)
            print(f"  {num_items:,} items, {softmax}: {rates[softmax]:,.0f} examples/s "
                  f"({steps} steps)", flush=True)
            del model, optimizer
        rows.append([f"{num_items:,} items", f"{rates['full']:,.0f}", f"{rates['sampled']:,.0f}",
                     f"{rates['sampled'] / rates['full']:.1f}x"])
    return rows


def accuracy(args) -> list[list[str]]:
    import pyarrow as pa

    from bench_accuracy import load_prefixes, prepare
    from srgnn.config import TrainConfig
    from srgnn.data.runfolder import RunFolder
    from srgnn.evaluation.evaluate import evaluate
    from srgnn.evaluation.heldout import HeldOut
    from srgnn.serving.recommender import Recommender
    from srgnn.training.loop import train

    args.home = args.home.resolve()
    os.environ["SRGNN_HOME"] = str(args.home)
    run_dir = (args.run_dir or args.home / "run").resolve()
    prepare(args, run_dir)
    run = RunFolder(run_dir)
    sessions, targets = load_prefixes(args.data)
    lengths = np.array([len(s) for s in sessions])
    held_out = HeldOut(pa.array(sessions, pa.list_(pa.string())), targets, lengths, run.vocabulary,
                       description="Diginetica test prefixes")
    base = TrainConfig(epochs=args.epochs, max_examples_per_epoch=args.max_examples,
                       max_valid_examples=args.max_valid_examples, num_threads=args.threads,
                       progress=False, precision="float32", top_k=args.k)
    runs = [("full", base)] if "full" in args.losses else []
    if "sampled" in args.losses:
        runs += [(f"sampled, {n} negatives", replace(base, softmax="sampled", negatives=n))
                 for n in (args.accuracy_negatives or [args.negatives])]
    rows = []
    k = args.k
    for label, config in runs:
        started = time.perf_counter()
        result = train(run.graphs("train"), run.graphs("valid"), run.num_items, config)
        seconds = time.perf_counter() - started
        recommender = Recommender.from_training(result.best_state_dict, result.model_config,
                                                run.vocabulary)
        figures = evaluate(recommender, held_out, k)
        rate = np.mean([s.examples_per_second for s in result.history])
        print(f"  {label}: test HR@{k} {100 * figures[f'HR@{k}']:.2f}, MRR@{k} "
              f"{100 * figures[f'MRR@{k}']:.2f}, best epoch {result.best_epoch}, "
              f"{rate:,.0f} examples/s, {seconds:.0f} s", flush=True)
        rows.append([label, f"{100 * figures[f'HR@{k}']:.2f}", f"{100 * figures[f'MRR@{k}']:.2f}",
                     f"{100 * result.best_valid_hit_rate:.2f}", str(result.best_epoch),
                     f"{rate:,.0f}", f"{seconds:.0f}"])
    return rows


def main(argv=None) -> None:
    from srgnn.logs import configure

    configure()
    args = parse_args(argv)
    import torch

    from srgnn.cpu import torch_threads

    torch.set_num_threads(torch_threads(args.threads))
    load = os.getloadavg()[0]
    speed_rows = [] if args.skip_speed else speed(args)
    accuracy_rows = []
    if not args.skip_accuracy:
        if not (args.data / "train_clicks.csv.gz").exists():
            sys.exit(f"Diginetica not found under {args.data.resolve()}")
        accuracy_rows = accuracy(args)
    print()
    print(f"{machine()} at the end, {load:.2f} at start")
    if speed_rows:
        print(f"\nTraining steps, hidden size {args.hidden_size}, batch {args.batch_size}, "
              f"{args.negatives} negatives (full: {args.full_steps} timed steps, sampled: "
              f"{args.sampled_steps}; fused Adam vs lazy Adam)")
        print(text_table(["catalogue", "full examples/s", "sampled examples/s", "speed-up"],
                         speed_rows))
    if accuracy_rows:
        print(f"\nDiginetica (43,097 items), {args.epochs} epoch(s) of at most "
              f"{args.max_examples:,} examples, test = the 60,858 published prefixes")
        print(text_table(["loss", f"test HR@{args.k} %", f"test MRR@{args.k} %",
                          f"valid HR@{args.k} %", "best epoch", "examples/s", "seconds"],
                         accuracy_rows))


if __name__ == "__main__":
    main()
