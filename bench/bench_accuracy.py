"""Accuracy of the whole pipeline on Diginetica, next to the published figures and the baselines.

    .venv/bin/python bench/bench_accuracy.py                                  # paper settings
    .venv/bin/python bench/bench_accuracy.py --epochs 7 --refit               # the README's figures
    .venv/bin/python bench/bench_accuracy.py --epochs 6 --refit --lr-decay-step 2   # the paper's model
    .venv/bin/python bench/bench_accuracy.py --epochs 4 --lr-decay-step 2 --normalize --scale 12 \
        --star-node --position-embeddings --refit --blend     # the best, as srgnn train chooses
    .venv/bin/python bench/bench_accuracy.py --epochs 1 --max-examples 20000  # a quick check
    .venv/bin/python bench/bench_accuracy.py --run-dir var/bench/accuracy/run --epochs 5
    .venv/bin/python bench/bench_accuracy.py --search 2h --epochs 8 --refit  # choices on validation
    .venv/bin/python bench/bench_accuracy.py --ablation --epochs 2 --max-examples 150000

What it runs, as production does:

1. **prepare** (Spark, through the ``srgnn prepare`` command line) on ``train_clicks.csv.gz``
   with ``--min-item-support 1`` (the benchmark is already filtered), ``--test-days 0`` and
   ``--valid-days 3``: the last 3 of the 30 training days (about 10% of the sessions, like the
   reference code's ``--valid_portion 0.1``) form the validation split that selects the epoch
   and stops training early. The test prefixes are never seen before scoring.
2. **train** with :func:`srgnn.training.run.run_training`: MLflow run, registered version
   (the epoch chosen on the validation split).
3. **score** the 60,858 prefixes of ``score_clicks.csv.gz`` (each its own session on the day
   after training ends, what a nightly scoring run receives) with the registered model loaded
   by :func:`srgnn.serving.registry.load_recommender`, and compare with ``targets.csv.gz``
   through the one evaluation path (:func:`srgnn.evaluation.evaluate.evaluate`).
4. with ``--refit``, **refit**: train again from the same initial weights on train + valid for
   the epoch count validation chose (:func:`srgnn.training.loop.refit`), and score that model too
   (row ``srgnn_refit``): the validation days are then learnt from as well.
5. **baselines** fitted on the same prepared train sessions, evaluated on the same prefixes.

Prints HR@20 / MRR@20 next to the published figures on exactly these prefixes (SR-GNN 50.73 /
17.59, NARM 49.70 / 16.17, STAMP 45.64 / 14.32, Item-KNN 35.75 / 11.57, POP 0.89 / 0.20),
then the full metric table and the figures by session length. The reference code picks its
epoch on the test set; here it is picked on validation days that the selected model does not
train on (the vocabulary covers them, but their items only ever appear to it as negatives):
expect a gap to the published figures without ``--refit``, which trains on those days too.

Prints the time each step took. Needs ``../shared/data/diginetica``; writes under ``--home``
(default ``var/bench/accuracy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from common import DIGINETICA, ROOT, machine, text_table
from srgnn.config import PRECISIONS, Settings
from srgnn.data.ragged import counts_to_offsets
from srgnn.data.runfolder import RunFolder
from srgnn.evaluation.evaluate import evaluate_ranked
from srgnn.evaluation.report import format_table
from srgnn.model.baselines import BASELINES, make_baseline

# Published HR@20 / MRR@20 (percent) on the same 60,858 prefixes, and our row for each.
PUBLISHED = [
    ("SGNN-HN (Pan et al. 2020)", 55.67, 19.45, None),
    ("GCE-GNN (Wang et al. 2020)", 54.22, 19.04, None),
    ("NISER+ (Gupta et al. 2019)", 53.39, 18.72, None),
    ("SR-GNN (paper)", 50.73, 17.59, "srgnn"),
    ("NARM", 49.70, 16.17, None),
    ("STAMP", 45.64, 14.32, None),
    ("Item-KNN", 35.75, 11.57, "iknn"),
    ("POP", 0.89, 0.20, "pop"),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DIGINETICA, help="folder with the three Diginetica files")
    p.add_argument("--home", type=Path, default=ROOT / "var" / "bench" / "accuracy",
                   help="project home of this benchmark (MLflow store, run folder)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="reuse this prepared run folder (skips prepare when it has summary.json)")
    p.add_argument("--valid-days", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--refit", action="store_true",
                   help="also train again on train + valid for the epoch count chosen on "
                        "validation, and score that model too (row srgnn_refit)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run folder's training from its last checkpoint (e.g. with more --epochs)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--max-examples", type=int, default=None, help="training examples per epoch")
    p.add_argument("--max-valid-examples", type=int, default=None)
    p.add_argument("--hidden-size", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--lr-decay-step", type=int, default=3,
                   help="epochs between learning-rate decays (x0.1); the authors' code decays "
                        "after 2 epochs first, then every 3")
    p.add_argument("--lr-decay-rate", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=1, help="propagation steps")
    p.add_argument("--normalize", action="store_true", help="NISER: scale x cosine scores")
    p.add_argument("--scale", type=float, default=12.0)
    p.add_argument("--position-embeddings", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--star-node", action="store_true")
    p.add_argument("--search", default="",
                   help="time budget of the search on validation (srgnn train --search), e.g. 2h")
    p.add_argument("--search-trials", type=int, default=None)
    p.add_argument("--candidates", choices=["srgnn", "auto"], default="srgnn",
                   help="auto: register the best on validation of SR-GNN, the baselines and "
                        "their blend, as srgnn train does by default")
    p.add_argument("--blend", action="store_true",
                   help="after training (or --resume of a finished run): choose on validation "
                        "among SR-GNN, the baselines and SR-GNN's blend with the best of them, "
                        "as --candidates auto does, fit the winner on the days the scored "
                        "SR-GNN saw (train + valid with --refit) and score it (row chosen)")
    p.add_argument("--ablation", action="store_true",
                   help="instead of the test figures: train the configuration given, then each "
                        "model option alone on top of it, and print validation HR/MRR, "
                        "examples/s and seconds per epoch (no MLflow)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="operands of the loss's catalogue products (TrainConfig.precision)")
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=list(BASELINES),
                   help="baselines to fit and score (none: --baselines with no name)")
    p.add_argument("--k", type=int, default=20)
    return p.parse_args(argv)


def prepare(args, run_dir: Path) -> dict:
    """``srgnn prepare`` in a subprocess (its JVM exits with it); returns summary.json."""
    if (run_dir / "summary.json").exists():
        print(f"prepare: reusing {run_dir}", flush=True)
        return json.loads((run_dir / "summary.json").read_text())
    command = [sys.executable, "-m", "srgnn.cli", "--home", str(args.home), "prepare",
               "--clicks", str(args.data / "train_clicks.csv.gz"), "--out", str(run_dir),
               "--min-item-support", "1", "--test-days", "0", "--valid-days", str(args.valid_days)]
    print("prepare:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads((run_dir / "summary.json").read_text())


def load_prefixes(data: Path):
    """The scoring input: raw-id prefixes (click order), their raw targets, in session order."""
    clicks = pd.read_csv(data / "score_clicks.csv.gz", dtype={"session_id": str, "item_id": str})
    clicks["number"] = clicks["session_id"].str[1:].astype(np.int64)  # "p17" -> 17
    clicks = clicks.sort_values(["number", "timestamp"], kind="stable")
    grouped = clicks.groupby("number", sort=True)
    sessions = grouped["item_id"].agg(list)
    session_ids = grouped["session_id"].first()
    targets = pd.read_csv(data / "targets.csv.gz", dtype={"session_id": str, "item_id": str})
    target_ids = targets.set_index("session_id")["item_id"].reindex(session_ids.to_numpy())
    if target_ids.isna().any():
        raise ValueError("some prefixes have no target in targets.csv.gz")
    return sessions.tolist(), target_ids.to_numpy(dtype=object)


def peak_mib() -> float:
    """The peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    from srgnn.logs import configure

    configure()  # the training's per-epoch lines, as `srgnn train` prints them
    args = parse_args(argv)
    if not (args.data / "train_clicks.csv.gz").exists():
        sys.exit(f"Diginetica not found under {args.data.resolve()}")
    args.home = args.home.resolve()
    os.environ["SRGNN_HOME"] = str(args.home)
    settings = Settings.from_env(home=args.home)
    run_dir = (args.run_dir or args.home / "run").resolve()
    k = args.k
    timings = {}

    started = time.perf_counter()
    summary = prepare(args, run_dir)
    timings["prepare"] = time.perf_counter() - started
    print(f"  vocabulary {summary['vocab_size']:,} items; "
          + ", ".join(f"{s} {c['sessions']:,} sessions / {c['examples']:,} examples"
                      for s, c in summary["splits"].items()), flush=True)

    from srgnn.config import TrainConfig
    from srgnn.evaluation.evaluate import evaluate
    from srgnn.evaluation.heldout import HeldOut
    from srgnn.serving.registry import load_recommender
    from srgnn.training.run import run_training

    config = TrainConfig(hidden_size=args.hidden_size, batch_size=args.batch_size, lr=args.lr,
                         lr_decay_step=args.lr_decay_step, lr_decay_rate=args.lr_decay_rate,
                         steps=args.steps, normalize=args.normalize, scale=args.scale,
                         position_embeddings=args.position_embeddings, dropout=args.dropout,
                         star_node=args.star_node, epochs=args.epochs,
                         patience=args.patience, top_k=k,
                         num_threads=args.threads, max_examples_per_epoch=args.max_examples,
                         max_valid_examples=args.max_valid_examples, progress=False,
                         precision=args.precision, search=args.search,
                         search_trials=args.search_trials, candidates=args.candidates,
                         refit=False)  # --refit below refits and scores that model too
    if args.ablation:
        ablation(run_dir, config, k)
        return
    started = time.perf_counter()
    trained = run_training(settings, run_dir, config, k=k, resume=args.resume)
    timings["train"] = time.perf_counter() - started
    if trained.get("search"):
        print(f"search: {trained['search']}", flush=True)
    print(f"train: version {trained['version']} ({trained.get('kind', 'srgnn')}), {trained['epochs']} "
          f"epoch(s), best epoch {trained['best_epoch']}, valid HR@{k} "
          f"{100 * trained['metrics'][f'best_valid_hr_at_{k}']:.2f}", flush=True)

    run = RunFolder(run_dir)
    vocabulary = run.vocabulary
    sessions, targets = load_prefixes(args.data)
    lengths = np.array([len(s) for s in sessions])
    # The prefixes as held-out examples in raw ids; list measures over the run's catalogue.
    held_out = HeldOut(pa.array(sessions, pa.list_(pa.string())), targets, lengths, vocabulary,
                       description=f"{args.data / 'score_clicks.csv.gz'} with its targets")
    target_index = vocabulary.indices(targets)  # 0: a target the model cannot know
    print(f"score: {len(sessions):,} prefixes; {np.mean(target_index == 0):.2%} of targets are "
          f"outside the training vocabulary", flush=True)

    def score(recommender, name: str, label: str, extra_seconds: float = 0.0) -> None:
        result = evaluate(recommender, held_out, k)  # the one evaluation path
        result["recommend_s"] += extra_seconds
        results[name] = result
        print(f"  {name:7s} {label}: HR@{k} {100 * result[f'HR@{k}']:.2f}  MRR@{k} "
              f"{100 * result[f'MRR@{k}']:.2f}  ({result['fallback_share']:.2%} fallback, "
              f"{result['recommend_s']:.1f}s)", flush=True)

    results = {}
    started = time.perf_counter()
    recommender, info = load_recommender(trained["model_uri"], settings=settings)
    score(recommender, "srgnn", info.resolved_uri, time.perf_counter() - started)

    if args.refit:
        from srgnn.serving.recommender import Recommender
        from srgnn.training.loop import refit

        epochs = trained["best_epoch"]
        print(f"refit: {epochs} epoch(s) on train + valid", flush=True)
        started = time.perf_counter()
        refitted = refit([run.graphs("train"), run.graphs("valid")], run.num_items, epochs, config,
                         output_dir=run.checkpoint_dir / "refit", resume=True)
        timings["refit"] = time.perf_counter() - started
        for stats in refitted.history:
            print(f"  refit epoch {stats.epoch}: loss {stats.train_loss:.4f}, "
                  f"{stats.examples_per_second:.0f} examples/s", flush=True)
        refit_recommender = Recommender.from_training(refitted.best_state_dict,
                                                      refitted.model_config, vocabulary)
        score(refit_recommender, "srgnn_refit", f"train + valid, {epochs} epoch(s)")

    if args.blend:
        from srgnn.evaluation.selection import select_candidate
        from srgnn.serving.recommender import Recommender

        selection = Recommender(recommender.ranker, vocabulary)  # the valid-chosen model alone
        final = refit_recommender if args.refit else selection
        started = time.perf_counter()
        chosen = select_candidate(run, final, selection, mode="auto",
                                  training_splits=("train", "valid") if args.refit else ("train",),
                                  k=k)
        print(f"blend: {chosen.reason}; chose {chosen.kind}"
              + (f" at weight {chosen.blend_weight:g}" if chosen.blend_weight is not None else "")
              + f" ({time.perf_counter() - started:.0f}s)", flush=True)
        for name, row in chosen.results.items():
            print(f"  valid {name:24s} HR@{k} {100 * row[f'HR@{k}']:.2f}  "
                  f"MRR@{k} {100 * row[f'MRR@{k}']:.2f}", flush=True)
        score(chosen.recommender, "chosen", chosen.kind)

    if args.baselines:
        # Each baseline on the prefixes' item indices (unknown items, 0, are ignored by the
        # baselines; an empty prefix gets the baseline's own popular items).
        train_sessions = run.sessions("train")
        flat = np.concatenate([np.asarray(s, dtype=object) for s in sessions]).astype(str)
        prefix_values = vocabulary.indices(flat)
        prefix_offsets = counts_to_offsets(lengths)
        for name in args.baselines:
            model = make_baseline(name)
            t0 = time.perf_counter()
            model.fit_flat(train_sessions.values, train_sessions.offsets,
                           num_items=vocabulary.num_items, session_times=train_sessions.end_times)
            t1 = time.perf_counter()
            top, _ = model.recommend(prefix_values, prefix_offsets, k)
            t2 = time.perf_counter()
            result = evaluate_ranked(top, target_index, lengths, vocabulary.popularity, k)
            result["fallback_share"] = float("nan")
            result["recommend_s"] = t2 - t1
            result["fit_s"] = t1 - t0
            results[name] = result
            print(f"  {name:7s} HR@{k} {100 * result[f'HR@{k}']:.2f}  MRR@{k} "
                  f"{100 * result[f'MRR@{k}']:.2f}  (fit {t1 - t0:.1f}s, recommend {t2 - t1:.1f}s)",
                  flush=True)

    hidden_size = ((trained.get("search") or {}).get("chosen") or {}).get("hidden_size",
                                                                          args.hidden_size)
    print()
    print(f"Diginetica, {len(sessions):,} published test prefixes; model {trained['model_uri']}: "
          f"{trained['epochs']} epoch(s)"
          + (f" of at most {args.max_examples:,} examples" if args.max_examples else "")
          + f", hidden size {hidden_size}; prepare {timings['prepare']:.0f}s, "
          f"train+log {timings['train']:.0f}s"
          + (f", refit {timings['refit']:.0f}s" if "refit" in timings else "")
          + f"; peak memory of this process {peak_mib():,.0f} MiB (training and refit run in "
          "it; prepare runs in its own)")
    print(machine())
    rows = []
    for label, hr, mrr, ours in PUBLISHED:
        mine = results.get(ours) if ours else None
        rows.append([label if ours is None else f"{ours} (this pipeline) / {label}",
                     f"{100 * mine[f'HR@{k}']:.2f}" if mine else "-",
                     f"{100 * mine[f'MRR@{k}']:.2f}" if mine else "-", f"{hr:.2f}", f"{mrr:.2f}"])
    for name in results:
        if name not in {ours for *_, ours in PUBLISHED} - {None}:
            rows.append([f"{name} (this pipeline)", f"{100 * results[name][f'HR@{k}']:.2f}",
                         f"{100 * results[name][f'MRR@{k}']:.2f}", "-", "-"])
    print(text_table(["model", f"HR@{k} %", f"MRR@{k} %", "published HR@20 %", "published MRR@20 %"],
                     rows))
    print()
    print(format_table(results))


# One row per option, each alone on top of the configuration given (--ablation).
ABLATION = [
    ("as given", {}),
    ("normalize (scale 12)", {"normalize": True, "scale": 12.0}),
    ("position embeddings", {"position_embeddings": True}),
    ("dropout 0.1", {"dropout": 0.1}),
    ("star node", {"star_node": True}),
    ("steps 2", {"steps": 2}),
]


def ablation(run_dir: Path, base, k: int) -> None:
    """Validation HR/MRR@k, examples/s and seconds per epoch of each :data:`ABLATION` row,
    trained in memory on the run folder (the epoch chosen on validation, as usual)."""
    from dataclasses import replace

    from srgnn.training.loop import train

    run = RunFolder(run_dir)
    rows = []
    for label, change in ABLATION:
        config = replace(base, **change, search="", refit=False)
        started = time.perf_counter()
        result = train(run.graphs("train"), run.graphs("valid"), run.num_items, config)
        seconds = time.perf_counter() - started
        speed = np.mean([s.examples_per_second for s in result.history])
        epoch_seconds = np.mean([s.seconds for s in result.history])
        rows.append([label, f"{100 * result.best_valid_hit_rate:.2f}",
                     f"{100 * result.best_valid_mrr:.2f}", str(result.best_epoch),
                     f"{speed:,.0f}", f"{epoch_seconds:.0f}", f"{seconds:.0f}"])
        print(f"  {label}: valid HR@{k} {rows[-1][1]}  MRR@{k} {rows[-1][2]}  "
              f"({rows[-1][4]} examples/s)", flush=True)
    print()
    print(f"Ablation on the validation split of {run_dir}: each option alone on top of "
          f"{', '.join(f'{n}={getattr(base, n)}' for n in ('hidden_size', 'lr', 'lr_decay_step', 'epochs', 'max_examples_per_epoch'))}")
    print(machine())
    print(text_table(["option", f"valid HR@{k} %", f"valid MRR@{k} %", "best epoch",
                      "examples/s", "s/epoch", "total s"], rows))


if __name__ == "__main__":
    main()
