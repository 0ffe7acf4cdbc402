"""Training speed and peak memory of SR-GNN's accuracy options (srgnn.model.network).

One row per option (``reference``: every option off, the model the other benchmarks time),
each option alone, the configuration of the README's Diginetica run (normalize, position
embeddings, star node), every option together, and every option with two propagation steps. Every
row trains the same model (hidden 100, batch 100, full softmax in float32,
``srgnn.training.loop.training_step`` with Adam) on the same in-memory batches of generated
sessions (:func:`srgnn.data.samples.clustered_sessions`, ``--items`` items), in a process of
its own, so that its peak resident memory is its own: ``peak RSS`` is the process's peak,
``training extra`` what training (optimizer state, activations, gradients) added above the
peak after the batches and the model were built (the option's model alone). ``examples/s`` is timed over ``--batches`` steps after
``--warmup`` steps, each followed by a step of the reference model on the same batch
(``reference alongside``), so that ``x reference``, the ratio of the two, holds up on a shared
machine whose load changes; the load average is printed before and after. Run::

    .venv/bin/python bench/bench_options.py
    .venv/bin/python bench/bench_options.py --items 43097 --batches 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# name: (ModelConfig options, steps)
ROWS = {
    "reference": ({}, 1),
    "normalize": ({"normalize": True}, 1),
    "position_embeddings": ({"position_embeddings": True}, 1),
    "dropout 0.2": ({"dropout": 0.2}, 1),
    "star_node": ({"star_node": True}, 1),
    "normalize + position + star": ({"normalize": True, "position_embeddings": True,
                                     "star_node": True}, 1),  # the Diginetica configuration
    "all": ({"normalize": True, "position_embeddings": True, "dropout": 0.2,
             "star_node": True}, 1),
    "all, steps 2": ({"normalize": True, "position_embeddings": True, "dropout": 0.2,
                      "star_node": True}, 2),
}


def measure(name: str, items: int, sessions: int, warmup: int, count: int, threads: int) -> dict:
    """Train the row ``name`` in this process; its figures."""
    import torch

    from common import peak_rss_mib
    from srgnn.data.graph import build_graphs
    from srgnn.data.ragged import gather_lists
    from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
    from srgnn.model.batching import collate
    from srgnn.model.network import SRGNN, ModelConfig
    from srgnn.training.loop import training_step
    from srgnn.training.memory import retain_freed_memory

    retain_freed_memory()  # as srgnn.training.loop.train does
    if threads:
        torch.set_num_threads(threads)
    values, offsets = sessions_to_arrays(
        clustered_sessions(items, sessions, cluster_size=20, mean_length=5.0, seed=0))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0)).numpy()
    batches = []
    for start in range(0, (warmup + count) * 100, 100):
        rows = order[start % len(order):][:100]
        batches.append(collate(build_graphs(*gather_lists(prefix_values, prefix_offsets, rows)),
                               targets[rows]))
    options, steps = ROWS[name]

    def fresh(shape_options: dict, shape_steps: int):
        torch.manual_seed(0)
        model = SRGNN(ModelConfig(num_items=items, hidden_size=100, steps=shape_steps,
                                  **shape_options)).train()
        return model, torch.optim.Adam(model.parameters(), lr=0.001, weight_decay=1e-5)

    before = peak_rss_mib()
    model, optimizer = fresh(options, steps)
    for batch in batches[:warmup]:
        training_step(model, optimizer, batch)
    peak = peak_rss_mib()  # the option's model alone, after its first steps
    # Timing: a step of the option's model, then one of the reference model on the same batch,
    # so that the load of other processes on the shared machine falls on both alike.
    reference, reference_optimizer = fresh({}, 1)
    for batch in batches[:2]:
        training_step(reference, reference_optimizer, batch)
    seconds = reference_seconds = 0.0
    losses = []
    for batch in batches[warmup:]:
        started = time.perf_counter()
        losses.append(training_step(model, optimizer, batch))
        seconds += time.perf_counter() - started
        started = time.perf_counter()
        training_step(reference, reference_optimizer, batch)
        reference_seconds += time.perf_counter() - started
    return {"examples_per_second": 100 * count / seconds,
            "reference_examples_per_second": 100 * count / reference_seconds,
            "peak_mib": peak, "training_extra_mib": peak - before,
            "parameters": sum(p.numel() for p in model.parameters()),
            "first_loss": losses[0], "last_loss": sum(losses[-10:]) / len(losses[-10:])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="catalogue size")
    parser.add_argument("--sessions", type=int, default=8_000, help="generated sessions")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batches", type=int, default=40, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default); 1 holds up best on a busy machine")
    parser.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # a child's row
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(measure(args.row, args.items, args.sessions, args.warmup, args.batches,
                                 args.threads)))
        return

    import torch

    from common import machine, text_table

    print(f"{machine()} at start; {args.threads or 'default'} torch thread(s) per row; "
          f"{args.items:,} items, hidden 100, batch 100, "
          f"{args.batches} timed steps per row, each row in its own process")
    results = {}
    for name in ROWS:
        done = subprocess.run(
            [sys.executable, __file__, "--row", name, "--items", str(args.items),
             "--sessions", str(args.sessions), "--warmup", str(args.warmup),
             "--batches", str(args.batches), "--threads", str(args.threads)],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"row {name!r} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [[name, f"{r['examples_per_second']:,.0f}", f"{r['reference_examples_per_second']:,.0f}",
             f"{r['examples_per_second'] / r['reference_examples_per_second']:.2f}",
             f"{r['peak_mib']:,.0f}", f"{r['training_extra_mib']:,.0f}", f"{r['parameters']:,}",
             f"{r['first_loss']:.3f} -> {r['last_loss']:.3f}"]
            for name, r in results.items()]
    print(text_table(["option", "examples/s", "reference alongside", "x reference",
                      "peak RSS MiB", "training extra MiB",
                      "parameters", "loss first -> last 10"], rows))
    print(f"torch {torch.__version__}; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
