"""Every option of the model and of its serving against the model without them, in one table.

    .venv/bin/python bench/bench_variants.py --base paper --threads 1 --epochs 8     # generated
    .venv/bin/python bench/bench_variants.py --threads 1 --epochs 8 --users 5000 \\
        --sessions 20000 --items 2000 --days 14 --return-days 2 \\
        --home var/bench/variants/synth-users                       # + the user-returns row
    .venv/bin/python bench/bench_variants.py --base paper --data diginetica --epochs 2 \\
        --max-examples 60000 --max-valid-examples 10000 --threads 1                  # Diginetica

One row per setting: every option off, then each one on alone:

* the graph variants ``attention_edges`` and ``temporal_edges``;
* the multi-task head (``--multitask-weight``), and its user-returns target
  (``--return-weight``) where the data has labels: a generated clickstream with ``--users``
  (Diginetica's benchmark files carry no ``user_id``);
* the popularity penalty in the loss (``--penalty``) and inverse-propensity weighting
  (``--ipw-power``), the fixes of the popularity bias;
* augmentation of 1-3 click sessions with ``--short-augment`` co-clicked items (item-KNN fitted
  on the training sessions), a serving option of the first row's model: no training of its own.

Each training uses the same settings (``--epochs``, ``--max-examples`` per epoch, epoch chosen
on validation HR@20, full softmax in float32). The chosen model is evaluated on validation and
test: HR@20, MRR@20, coverage@20, HR@20 on long-tail targets, HR@20 by prefix length (1, 2, 3,
4+; on validation) and the training seconds per epoch (training steps only).

Data: ``--data synth`` generates a clickstream (:mod:`srgnn.data.synth`) and prepares it with
``srgnn prepare`` (last day test, the day before validation), as bench/bench_popularity.py does;
both splits are scored from their session-graph Parquet, whose ``edge_gap`` gives
temporal_edges the real click gaps. ``--data diginetica`` prepares Diginetica the same way
(``--valid-days 3``) and tests on the 60,858 published prefixes through the recommender; those
prefixes have no click times, so temporal_edges scores them with every gap 0. The
short-augmentation row is scored through the recommender on both splits. Run folders are
reused from ``--home`` (default ``var/bench/variants/<data>``).

The last line applies the rule for a default: an option is on by default only when it beats
the model without it on validation HR@20 by more than 0.5 point without losing validation
MRR@20; otherwise every option stays off. (bench/bench_popularity.py applies the popularity
fixes' own rule, a coverage gain for at most 0.5 point of HR@20, over several strengths.)
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from bench_popularity import data_arguments, describe, held_out_sets, start
from common import text_table

HR_MARGIN = 0.005  # a default must gain more than 0.5 point of validation HR@20
LENGTHS = ("1", "2", "3", "4+")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("synth", "diginetica"), default="synth")
    p.add_argument("--multitask-weight", type=float, default=0.1)
    p.add_argument("--base", choices=("default", "paper"), default="default",
                   help="what every row adds its option to: the default configuration, or the "
                        "paper's model (normalize, position embeddings and star node off)")
    p.add_argument("--return-weight", type=float, default=0.1,
                   help="the user-returns row's weight (only where the graphs have labels)")
    p.add_argument("--penalty", type=float, default=0.1, help="popularity_penalty (0: no row)")
    p.add_argument("--ipw-power", type=float, default=0.5,
                   help="propensity_weighting (0: no row)")
    p.add_argument("--short-augment", type=int, default=3,
                   help="co-clicked items prepended to 1-3 click sessions (0: no row)")
    return data_arguments(p, sessions=6_000, items=600, epochs=3, hidden_size=64).parse_args(argv)


def settings(args, labelled: bool = False) -> list[tuple[str, dict]]:
    """``(label, TrainConfig changes)`` of every run, every variant off first; the user-returns
    row only when the graphs have ``labelled`` examples."""
    runs = [("all off", {}), ("attention_edges", {"attention_edges": True}),
            ("temporal_edges", {"temporal_edges": True}),
            (f"multitask_weight {args.multitask_weight:g}",
             {"multitask_weight": args.multitask_weight})]
    if labelled and args.return_weight > 0:
        runs.append((f"return_weight {args.return_weight:g}", {"return_weight": args.return_weight}))
    if args.penalty > 0:
        runs.append((f"popularity_penalty {args.penalty:g}", {"popularity_penalty": args.penalty}))
    if args.ipw_power > 0:
        runs.append((f"propensity_weighting {args.ipw_power:g}",
                     {"propensity_weighting": args.ipw_power}))
    return runs


def by_length(figures: dict, k: int) -> list[float]:
    """HR@K of prefixes of 1, 2, 3 and 4 or more clicks (the longer buckets pooled by their
    examples)."""
    buckets = figures["by_length"]
    out = [buckets[label][f"HR@{k}"] for label in LENGTHS[:3]]
    longer = [b for label, b in buckets.items() if label not in LENGTHS[:3] and b["examples"]]
    examples = sum(b["examples"] for b in longer)
    out.append(sum(b[f"HR@{k}"] * b["examples"] for b in longer) / examples if examples
               else float("nan"))
    return out


def row_of(label: str, figures: dict, k: int, epoch_seconds: float) -> list[str]:
    cells = [label]
    for split in ("valid", "test"):
        for column in ("HR@{k}", "MRR@{k}", "coverage@{k}", "long_tail_HR@{k}"):
            cells.append(f"{100 * figures[split].get(column.format(k=k), float('nan')):.2f}")
    cells += [f"{100 * value:.2f}" for value in by_length(figures["valid"], k)]
    return cells + [f"{epoch_seconds:.1f}"]


def choose_default(results: list[tuple[str, dict]], k: int) -> str:
    """The rule: the option with the largest validation HR@K gain above the margin that does
    not lose validation MRR@K; every variant off when none qualifies."""
    base = results[0][1]["valid"]
    best, best_gain = None, HR_MARGIN
    for label, figures in results[1:]:
        valid = figures["valid"]
        gain = valid[f"HR@{k}"] - base[f"HR@{k}"]
        if gain > best_gain and valid[f"MRR@{k}"] >= base[f"MRR@{k}"]:
            best, best_gain = label, gain
    if best is None:
        return (f"no variant gains more than {100 * HR_MARGIN:.1f} point of validation HR@{k}: "
                "all stay off")
    return f"{best} (validation HR@{k} +{100 * best_gain:.2f} points)"


def main(argv=None) -> None:
    args = parse_args(argv)
    from srgnn.evaluation.evaluate import evaluate, evaluate_graphs, fit_baselines
    from srgnn.serving.recommender import Recommender, ShortSessionFallback
    from srgnn.training.fallback import SHORT_LENGTHS
    from srgnn.training.loop import train

    run, base, load = start(args, "variants")
    if args.base == "paper":
        base = replace(base, normalize=False, position_embeddings=False, star_node=False)
    popularity = run.vocabulary.popularity
    k = args.k
    test_prefixes = held_out_sets(args, run)["test"] if args.data == "diginetica" else None
    results, rows, plain = [], [], None
    from srgnn.model.reader import GraphParquetReader

    labels = GraphParquetReader(run.graphs("train"), batch_size=1).known_values("returns")
    print(f"training examples with a user-returns label: {labels:,}", flush=True)
    for label, changes in settings(args, labelled=labels > 0):
        result = train(run.graphs("train"), run.graphs("valid"), run.num_items,
                       replace(base, **changes))
        model = result.best_model()
        figures = {"valid": evaluate_graphs(model, run.graphs("valid"), popularity, k)}
        recommender = Recommender.from_training(result.best_state_dict, result.model_config,
                                                run.vocabulary)
        if test_prefixes is None:
            figures["test"] = evaluate_graphs(model, run.graphs("test"), popularity, k)
        else:
            figures["test"] = evaluate(recommender, test_prefixes, k)
        epoch_seconds = float(np.mean([e.train_examples / e.examples_per_second
                                       for e in result.history]))
        plain = plain or (recommender, epoch_seconds)
        results.append((label, figures))
        rows.append(row_of(label, figures, k, epoch_seconds))
        print(f"  {label}: valid HR@{k} {100 * figures['valid'][f'HR@{k}']:.2f}, "
              f"{epoch_seconds:.1f} s/epoch", flush=True)

    if args.short_augment > 0:  # the first model, its 1-3 click prefixes augmented
        recommender, epoch_seconds = plain
        knn = fit_baselines(run, ["iknn"])[0]["iknn"].ranker.baseline
        augmented = recommender.with_short_fallback(
            ShortSessionFallback(knn, (), {}, SHORT_LENGTHS, args.short_augment))
        figures = {split: evaluate(augmented, held_out, k)
                   for split, held_out in held_out_sets(args, run).items()}
        label = f"short_augment {args.short_augment} (serving)"
        results.append((label, figures))
        rows.append(row_of(label, figures, k, epoch_seconds))
        print(f"  {label}: valid HR@{k} {100 * figures['valid'][f'HR@{k}']:.2f}", flush=True)

    describe(args, run, load, f"Base: the {args.base} configuration. Percent; HR by length on "
             "validation.")
    header = (["setting"] + [f"valid {n}" for n in ("HR", "MRR", "cov", "LT HR")]
              + [f"test {n}" for n in ("HR", "MRR", "cov", "LT HR")]
              + [f"HR len {n}" for n in LENGTHS] + ["s/epoch"])
    print(text_table(header, rows))
    print(f"\nDefault by the rule (more than {100 * HR_MARGIN:.1f} point of validation HR@{k} "
          f"without losing validation MRR@{k}): {choose_default(results, k)}")


if __name__ == "__main__":
    main()
