"""Benchmark: the pipeline at a large shop's scale (prints a table; not a test).

    .venv/bin/python bench/bench_scale.py                       # 1,000,000 items, ~12M clicks
    .venv/bin/python bench/bench_scale.py --items 100000 --sessions 300000 --score-sessions 100000

On a generated log (``srgnn.data.synth``: Zipf-like popularity inside latent intents) with
``--items`` items, ``--sessions`` training sessions over ``--days`` days and one more day of
``--score-sessions`` sessions to score, it measures, each step in a child process:

1. **prepare** (Spark local): wall time and peak memory of the process tree and of its JVM;
2. **training speed**: examples/s of one capped epoch with sampled softmax and with full
   softmax on the same catalogue (``pipeline.train_step``: the training task's own code), and
   the first model registered in MLflow (the sampled one) is the model scored below;
3. **scoring the day**: ``srgnn score`` with the local engine, and with the spark engine on a
   Spark standalone cluster started here (a master and two 1-core workers, as the tests'
   fixture does): wall time, peak memory of the driver's process tree and of each worker
   (its executor JVM with its Python workers), sessions/s, and the top-K path the run used
   (exact, or the approximate index with its recall against exact, from the run summary).

Accuracy of sampled against full softmax on Diginetica is ``bench/bench_sampled.py``'s; the
approximate index alone is ``bench/bench_topk.py``'s. Goals from the issue tracker, printed
beside the figures: training >= 20x faster with sampled softmax at 10^6 items; scoring a day
of 10^6 sessions over 10^6 items in <= 15 minutes with <= 4 GiB per process; approximate
top-20 recall >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, GIB, machine, run_measured, text_table

SRGNN = [sys.executable, "-m", "srgnn.cli"]


def _generate(home: Path, items: int, sessions: int, days: int, score_sessions: int, seed: int):
    """Training days under home/clicks, the day to score under home/score/ds=<day>."""
    from srgnn.data.synth import SynthConfig, write_clickstream

    intents = max(60, items // 500)
    started = time.time()
    train = write_clickstream(str(home / "clicks"), SynthConfig(
        sessions=sessions, items=items, intents=intents, days=days, end_date="2026-11-27",
        bad_share=0.001, seed=seed), by_day=True)
    # The next day, from the same catalogue and intents (same seed), fewer sessions.
    day = write_clickstream(str(home / "score-all"), SynthConfig(
        sessions=score_sessions, items=items, intents=intents, days=1, end_date="2026-11-28",
        bad_share=0.001, seed=seed), by_day=True)
    shutil.move(str(home / "score-all" / "ds=2026-11-28"), str(home / "score"))
    return train, day, time.time() - started


def _train_command(run: Path, softmax: str, examples: int, valid: int) -> list[str]:
    code = (
        "import json, sys\n"
        "from srgnn import config\n"
        "from srgnn.logs import configure\n"
        "from srgnn.pipeline import train_step\n"
        "configure()\n"
        f"cfg = config.from_values(config.TrainConfig, dict(epochs=1, softmax={softmax!r}, "
        f"max_examples_per_epoch={examples}, max_valid_examples={valid}, "
        # the short-session fallback is chosen on the whole validation split (millions here)
        "short_fallback=False))\n"
        f"out = train_step({str(run)!r}, cfg)\n"
        "print('TRAINED ' + json.dumps({k: str(v) for k, v in out.items()}))\n"
    )
    return [sys.executable, "-c", code]


def _examples_per_second(output: str) -> float | None:
    rates = re.findall(r"([\d,.]+) examples/s", output)
    return float(rates[-1].replace(",", "")) if rates else None


class _WorkerSampler:
    """Peak resident memory of each Spark executor (its JVM and the Python workers under it),
    sampled every ``interval`` seconds while running."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for process in psutil.process_iter(["cmdline"]):
                try:
                    if "CoarseGrainedExecutorBackend" not in " ".join(process.info["cmdline"] or []):
                        continue
                    tree = [process] + process.children(recursive=True)
                    rss = sum(p.memory_info().rss for p in tree)
                except psutil.Error:
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            self._stop.wait(self.interval)


class _Rows(list):
    """The table's rows, each also printed as soon as it is measured (a long run that is
    stopped still leaves its figures)."""

    def append(self, row: list[str]) -> None:
        super().append(row)
        print(" | ".join(cell for cell in row if cell), flush=True)


def _summary(output: str) -> dict:
    """What ``srgnn score`` printed: its counts (``sessions_in``...) and the top-K path."""
    found = {}
    for line in output.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in ("sessions_in", "rows_written", "fallbacks"):
            found[parts[0]] = int(parts[1].replace(",", ""))
        elif len(parts) == 2 and parts[0] == "top-k":
            found["topk"] = parts[1].strip()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--sessions", type=int, default=2_500_000, help="training sessions (~4 clicks each)")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--score-sessions", type=int, default=1_000_000)
    parser.add_argument("--sampled-examples", type=int, default=300_000,
                        help="examples of the sampled-softmax epoch (its model is scored)")
    parser.add_argument("--full-examples", type=int, default=2_000,
                        help="examples of the full-softmax epoch (speed only)")
    parser.add_argument("--valid-examples", type=int, default=2_000)
    parser.add_argument("--engines", nargs="+", default=["local", "spark"], choices=["local", "spark"])
    parser.add_argument("--home", default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the log and the prepared run folder already under --home")
    parser.add_argument("--skip-train", action="store_true",
                        help="with --reuse: score with the model registered by an earlier run")
    args = parser.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="bench-scale-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SRGNN_HOME": str(home), "SRGNN_SPARK_DRIVER_MEMORY": "4g"}
    rows = _Rows()
    print(f"home {home}; {machine()} at start")

    run = home / "run"
    if not (args.reuse and (run / "summary.json").exists()):
        train, day, seconds = _generate(home, args.items, args.sessions, args.days,
                                        args.score_sessions, args.seed)
        rows.append(["generate log", f"{seconds:,.0f}", "", "",
                     f"{train.clicks + day.clicks:,} clicks, {train.sessions + day.sessions:,} sessions"])
        prepared = run_measured(SRGNN + ["prepare", "--clicks", str(home / "clicks"), "--out", str(run),
                                         "--min-item-support", "1", "--test-days", "0", "--valid-days", "1"],
                                env)
        summary = json.loads((run / "summary.json").read_text())
        examples = {split: info.get("examples") for split, info in summary.get("splits", {}).items()}
        rows.append(["prepare (Spark local)", f"{prepared.seconds:,.0f}", f"{prepared.peak_gib:.2f}",
                     f"{prepared.peak_jvm_gib:.2f}",
                     f"{summary['clicks_read']:,} clicks -> {summary['vocab_size']:,} items, examples {examples}"])

    rates = {}
    trainings = () if args.skip_train else (("sampled", args.sampled_examples),
                                             ("full", args.full_examples))
    for softmax, count in trainings:
        # Training is idempotent per run folder: each loss trains in its own folder, which
        # links to the prepared data.
        folder = home / f"run-{softmax}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for entry in run.iterdir():
            if entry.name not in ("model", "training.json"):  # what training writes
                (folder / entry.name).symlink_to(entry)
        trained = run_measured(_train_command(folder, softmax, count, args.valid_examples), env)
        rates[softmax] = _examples_per_second(trained.output)
        rows.append([f"train 1 epoch, {softmax} softmax", f"{trained.seconds:,.0f}", f"{trained.peak_gib:.2f}", "",
                     f"{count:,} examples, {rates[softmax] or 0:,.0f} examples/s"])
    if rates.get("sampled") and rates.get("full"):
        rows.append(["  sampled / full", "", "", "", f"{rates['sampled'] / rates['full']:.1f}x (goal >= 20x)"])

    model = "models:/srgnn/1"  # the sampled-softmax run registered first
    clicks = str(home / "score")
    cluster = None
    try:
        for engine in args.engines:
            run_env = dict(env)
            if engine == "spark":
                sys.path.insert(0, str(ROOT / "tests"))
                from cluster import start_cluster  # the tests' fixture: master + two 1-core workers

                logs = home / "cluster-logs"
                logs.mkdir(exist_ok=True)
                # Workers offer 4 GiB each: an executor of 3 GiB (JVM heap) and its Python
                # worker, the per-process goal.
                cluster = start_cluster(logs, memory="4g")
                run_env = cluster.env(**env, SRGNN_SPARK_EXECUTOR_MEMORY="3g")
            with _WorkerSampler() as workers:
                scored = run_measured(SRGNN + ["score", "--clicks", clicks, "--ds", "2026-11-28",
                                               "--model", model, "--engine", engine], run_env, check=False)
            result = _summary(scored.output)
            sessions = result.get("sessions_in", 0)
            worker_peaks = ", ".join(f"{peak / GIB:.2f}" for peak in sorted(workers.peaks.values()))
            topk = result.get("topk", "?")
            rows.append([f"score --engine {engine}", f"{scored.seconds:,.0f}", f"{scored.peak_gib:.2f}",
                         f"{scored.peak_jvm_gib:.2f}",
                         (f"{sessions:,} sessions, {sessions / scored.seconds:,.0f}/s; workers GiB "
                          f"[{worker_peaks}]; top-K {topk}" if scored.returncode == 0
                          else f"FAILED: {scored.output.strip().splitlines()[-1][:200]}")])
    finally:
        if cluster is not None:
            cluster.stop()

    print()
    print(f"{args.items:,} items; {machine()} at end")
    print(text_table(["step", "wall s", "peak GiB", "JVM GiB", "what"], rows))
    print("goals: sampled softmax >= 20x full at 1e6 items; a 1e6-session day <= 15 min, "
          "<= 4 GiB per process; approximate top-20 recall >= 0.95")


if __name__ == "__main__":
    main()
