"""Top-K over large catalogues: exact blocked scoring vs faiss IVF and HNSW (prints tables).

For each catalogue size (``--items``, d = ``--dim``) it generates Zipf-clustered item embeddings
and session vectors (:func:`clustered`), takes the exact top-20 of every session vector with
the scorer's own blocked path (float32 blocks of scores within the memory budget and a running
top-K), and measures, on 1 and 2 threads:

* ``exact``: the scorer's blocked matmul + top-K;
* ``ivf nprobe=P``: faiss ``IndexIVFFlat`` (inner product, ``4 sqrt(N)`` lists,
  :class:`srgnn.serving.ann.ItemIndex`), for several ``P``, and the ``P`` that
  :func:`srgnn.serving.ann.choose_nprobe` picks for recall 0.95 on half the session vectors,
  with its recall on the other half;
* ``hnsw M=32 ef=E``: faiss ``IndexHNSWFlat`` (inner product), up to ``--hnsw-max`` items (its
  build takes minutes beyond);

ms a session vector (wall, and this process's CPU time: on shared cores the CPU time says what
the work costs), session vectors/s, recall@20 against exact, index build time and memory.
Then ``--end-to-end`` sessions of raw item ids go through the whole
:class:`~srgnn.serving.recommender.Recommender` (vocabulary, graphs, SR-GNN forward pass, top-K)
of a model over the largest catalogue with the approximate index (``topk_index="ivf"``, nprobe
chosen for recall 0.95, recall measured on the next 1000 sessions), and the time of a million
sessions on two cores is estimated from its CPU time (index build, the exact sample sessions,
then the rest per session). ``--model RUN`` replaces the synthetic end-to-end run with a trained
model's: its item embeddings and the session vectors of its validation prefixes (real geometry),
at its own catalogue size and grown to ``--grow`` items (:func:`trained_model`), its scorer
end to end on those prefixes.

The clustered embeddings: ``N / 20`` clusters with Zipf(0.7) sizes around a shared mean (norm
0.65: real SR-GNN item embeddings share a component of that size, mean cosine 0.4), coordinates
scaled ``1/sqrt(i)`` (a decaying spectrum), items at 0.5 of the centres' spread (median
nearest-neighbour cosine 0.88; 0.85 in a model trained on Diginetica); a session vector is the
mean of 1-3 items of one cluster plus noise. IVF needs more probes on them than on that trained
model (recall 0.56 vs 0.96 at nprobe 8 of 830 lists, 43k items), so their figures are on the
safe side.

    .venv/bin/python bench/bench_topk.py                       # 100k and 1M items
    .venv/bin/python bench/bench_topk.py --items 100000 --end-to-end 0
    .venv/bin/python bench/bench_topk.py --model RUN --items ""  # a trained model, and grown
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np

from common import machine, peak_rss_mib, text_table

K = 20
MIB = 2**20


def clustered(num_items: int, dim: int, sessions: int, seed: int = 0):
    """``(items (N, d), session vectors (S, d))``, float32: see the module docstring."""
    rng = np.random.default_rng(seed)
    clusters = max(1, num_items // 20)
    share = 1 / np.arange(1, clusters + 1) ** 0.7
    label = rng.choice(clusters, size=num_items, p=share / share.sum())
    scale = 1 / np.sqrt(np.arange(1, dim + 1))
    scale /= np.linalg.norm(scale)
    mean = rng.standard_normal(dim)
    mean *= 0.65 / np.linalg.norm(mean)
    centres = mean + 0.75 * rng.standard_normal((clusters, dim)) * scale
    items = (centres[label] + 0.5 * rng.standard_normal((num_items, dim)) * scale).astype(np.float32)
    order = np.argsort(label, kind="stable")
    starts = np.searchsorted(label[order], np.arange(clusters))
    counts = np.bincount(label, minlength=clusters)
    chosen = label[rng.integers(0, num_items, size=sessions)]  # a cluster, by its items' share
    size = rng.integers(1, 4, size=sessions)
    picks = order[starts[chosen][:, None] + (rng.random((sessions, 3)) * counts[chosen][:, None]).astype(int)]
    mask = np.arange(3)[None, :] < size[:, None]
    vectors = (items[picks] * mask[:, :, None]).sum(axis=1) / size[:, None]
    vectors += 0.5 * rng.standard_normal((sessions, dim)) * scale
    return items, vectors.astype(np.float32), label


def model_over(items: np.ndarray):
    """An SR-GNN whose item embeddings are ``items`` (its graph network stays random)."""
    import torch

    from srgnn.model.network import SRGNN, ModelConfig

    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=len(items), hidden_size=items.shape[1]))
    with torch.no_grad():
        model.embedding.weight[1:] = torch.from_numpy(items)
    return model


class Timer:
    """Wall seconds and this process's CPU seconds (all its threads) of a ``with`` block: on
    shared cores the CPU time says what the work costs, the wall time what it took."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def exact_top_k(scorer, vectors: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, Timer]:
    """The scorer's exact float32 top-K of every vector, and its :class:`Timer`."""
    import torch

    timer = Timer().__enter__()
    out = []
    with torch.inference_mode():
        for start in range(0, len(vectors), batch):
            session = torch.from_numpy(vectors[start:start + batch])
            _, columns = scorer._best_columns(scorer.model.score_items, session, K)
            out.append(columns.numpy())
    timer.__exit__()
    return np.concatenate(out), timer


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    from srgnn.serving.ann import recall_hits

    return float(recall_hits(found, exact).sum() / exact.size)


def row(method, threads, timer, count, rec, build="", memory=""):
    return [method, str(threads), f"{1000 * timer.wall / count:.3f}",
            f"{1000 * timer.cpu / count:.3f}", f"{count / timer.wall:,.0f}",
            f"{count / timer.cpu:,.0f}", f"{rec:.3f}", build, memory]


def bench_catalogue(items, vectors, label, args, rows):
    import faiss
    import torch

    from srgnn.serving.ann import ItemIndex, choose_nprobe
    from srgnn.serving.predict import Scorer

    num = len(items)
    scorer = Scorer(model_over(items), precision="float32", batch_size=1000)
    exact = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        exact[threads], timer = exact_top_k(scorer, vectors[: args.exact_queries])
        rows.append(row(f"{label} exact (blocks of {scorer.item_chunk_size})", threads, timer,
                        args.exact_queries, 1.0, "-",
                        f"{4 * 1000 * scorer.item_chunk_size / MIB:.0f} (scores)"))
    EXACT_CPU_MS[label.replace(" (grown)", "")] = 1000 * timer.cpu / args.exact_queries
    torch.set_num_threads(max(args.threads))
    truth, _ = exact_top_k(scorer, vectors)
    with Timer() as built:
        index = ItemIndex(items)
    build = f"{built.wall:.1f} / {built.cpu:.1f}"
    memory = f"{index.memory_bytes / MIB:.0f}"
    half = len(vectors) // 2
    chosen, tuned = choose_nprobe(index, vectors[:half], truth[:half], 0.95)
    for nprobe in sorted(set(args.nprobe) | {chosen}):
        for threads in args.threads:
            torch.set_num_threads(threads)
            with Timer() as timer:
                _, found = index.search(vectors[half:], K, nprobe)
            note = " (chosen)" if nprobe == chosen else ""
            rows.append(row(f"{label} ivf nlist={index.nlist} nprobe={nprobe}{note}", threads,
                            timer, len(vectors) - half, recall(found, truth[half:]), build, memory))
            build = memory = ""
    print(f"  {label}: nprobe {chosen} chosen for recall 0.95 on {half} vectors "
          f"(recall there {tuned:.3f})", flush=True)
    if num <= args.hnsw_max:
        faiss.omp_set_num_threads(max(args.threads))
        with Timer() as built:
            hnsw = faiss.IndexHNSWFlat(items.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.add(items)
        build = f"{built.wall:.1f} / {built.cpu:.1f}"
        memory = f"{(num * (4 * items.shape[1] + 2 * 32 * 4 + 8)) / MIB:.0f}"
        for ef in (64, 128, 256):
            hnsw.hnsw.efSearch = ef
            for threads in args.threads:
                faiss.omp_set_num_threads(threads)
                with Timer() as timer:
                    _, found = hnsw.search(vectors[half:], K)
                rows.append(row(f"{label} hnsw M=32 ef={ef}", threads, timer,
                                len(vectors) - half, recall(found, truth[half:]), build, memory))
                build = memory = ""
    return chosen


def bench_end_to_end(items, label_of_item, sessions: int, threads: int):
    """Sessions/s of the whole recommender with the approximate index (and its report)."""
    import pyarrow as pa
    import torch

    from srgnn.data.vocab import Vocabulary
    from srgnn.serving.ann import ItemIndex
    from srgnn.serving.predict import Scorer
    from srgnn.serving.recommender import Recommender, recommend_batches

    torch.set_num_threads(threads)
    num = len(items)
    rng = np.random.default_rng(1)
    order = np.argsort(label_of_item, kind="stable")
    starts = np.searchsorted(label_of_item[order], np.arange(label_of_item.max() + 1))
    counts = np.bincount(label_of_item)
    lengths = rng.integers(1, 6, size=sessions)
    clusters = label_of_item[rng.integers(0, num, size=sessions)]
    values = order[np.repeat(starts[clusters], lengths)
                   + (rng.random(lengths.sum()) * np.repeat(counts[clusters], lengths)).astype(int)] + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.array([f"i{j}" for j in range(1, num + 1)], dtype=object)
    raw = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(ids[values - 1], pa.string()))
    scorer = Scorer(model_over(items), precision="float32", topk_index="ivf")
    with Timer() as built:  # what the first batch would do, timed apart
        scorer._approximate.index = ItemIndex(items)
    recommender = Recommender(scorer, Vocabulary(ids, np.ones(num + 1, dtype=np.int64)))
    with Timer() as timer:
        for _ in recommend_batches(recommender, raw, K):
            pass
    return built, timer, recommender.topk_report()


def trained_model(run: str, num_items: int | None = None, seed: int = 0):
    """``(model, prefixes)``: the SR-GNN of ``run`` (``model/best_model.pt``) and its validation
    prefixes (values, offsets). With ``num_items`` beyond its catalogue, the catalogue is grown to
    that size: each new item is a trained item (drawn uniformly) plus Gaussian noise whose norm is
    the trained items' median nearest-neighbour distance, so that the new catalogue keeps the
    trained geometry and the real sessions' vectors still come from the trained graph network."""
    import pyarrow.dataset as pads
    import torch

    from srgnn.model.network import SRGNN, ModelConfig

    payload = torch.load(os.path.join(run, "model", "best_model.pt"), map_location="cpu",
                         weights_only=True)
    config = ModelConfig(**payload["model_config"])
    state = payload["model"]
    if num_items and num_items > config.num_items:
        rng = np.random.default_rng(seed)
        trained = state["embedding.weight"]  # (N0 + 1, d)
        sample = trained[1 + rng.choice(config.num_items, size=2000, replace=False)]
        distances = torch.cdist(sample, trained[1:])
        distances[distances == 0] = float("inf")  # the item itself
        spread = float(distances.min(dim=1).values.median())
        parents = torch.from_numpy(rng.integers(1, config.num_items + 1, size=num_items - config.num_items))
        noise = torch.from_numpy(rng.standard_normal((len(parents), trained.shape[1])).astype(np.float32))
        grown = trained[parents] + spread * noise / np.sqrt(trained.shape[1])
        state = dict(state, **{"embedding.weight": torch.cat([trained, grown])})
        config = ModelConfig(**{**payload["model_config"], "num_items": num_items})
    model = SRGNN(config)
    model.load_state_dict(state)
    table = pads.dataset(os.path.join(run, "graphs", "valid")).to_table(columns=["prefix"])
    prefixes = table.column("prefix").combine_chunks()
    return model, (np.asarray(prefixes.flatten()).astype(np.int64), np.asarray(prefixes.offsets))


def bench_model(run: str, num_items: int | None, args, rows) -> None:
    """Rows for a trained model (grown to ``num_items``): its item embeddings and the session
    vectors of its validation prefixes; then its scorer end to end on ``--end-to-end`` of those
    prefixes with the approximate index."""
    import torch

    from srgnn.data.graph import build_graphs
    from srgnn.data.ragged import gather_lists
    from srgnn.model.batching import collate
    from srgnn.serving.ann import ItemIndex
    from srgnn.serving.predict import Scorer

    model, (values, offsets) = trained_model(run, num_items)
    count = min(args.queries, len(offsets) - 1)
    with torch.inference_mode():
        vectors = model.session_embedding(collate(build_graphs(
            *gather_lists(values, offsets, np.arange(count))))).numpy()
    items = model.embedding.weight[1:].detach().numpy()
    label = f"trained {model.config.num_items // 1000}k"
    bench_catalogue(items, vectors, label + (" (grown)" if num_items else ""), args, rows)
    if not args.end_to_end:
        return
    threads = max(args.threads)
    torch.set_num_threads(threads)
    sessions = min(args.end_to_end, len(offsets) - 1)
    chosen = gather_lists(values, offsets, np.arange(sessions))
    scorer = Scorer(model, precision="float32", topk_index="ivf")
    with Timer() as built:
        scorer._approximate.index = ItemIndex(items)
    with Timer() as timer:
        scorer.top_k(*chosen, k=K)
    END_TO_END.append((label, threads, built, timer, sessions, scorer.topk_report()))


END_TO_END: list = []  # (label, threads, build Timer, scoring Timer, sessions, report)
EXACT_CPU_MS: dict = {}  # catalogue label -> CPU ms a vector of the exact path (most threads)


def others() -> str:
    """The processes that used the most CPU meanwhile (besides this one), one line."""
    out = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
                         capture_output=True, text=True).stdout.splitlines()
    mine = os.getpid()
    busy = [line.strip() for line in out[:8] if float(line.split()[0]) >= 10]
    return "; ".join(busy) + f" (this process: {mine})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--queries", type=int, default=4000,
                        help="session vectors (half choose nprobe, half are timed)")
    parser.add_argument("--exact-queries", type=int, default=1000)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--nprobe", default="8,16,32,64,128")
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    parser.add_argument("--end-to-end", type=int, default=20_000,
                        help="sessions through the whole recommender (0: none)")
    parser.add_argument("--model", help="a run folder with model/best_model.pt and graphs/valid")
    parser.add_argument("--grow", type=int, default=1_000_000,
                        help="--model's catalogue grown to this many items (trained_model)")
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.nprobe = [int(p) for p in args.nprobe.split(",")]
    import importlib

    for name in ("srgnn", "torch"):  # srgnn first (OMP_WAIT_POLICY, as the product); machine()
        importlib.import_module(name)  # reports torch's threads
    print(f"machine: {machine()} at start", flush=True)
    rows: list[list[str]] = []
    largest = None
    for num in (int(n) for n in args.items.split(",") if n):
        started = time.perf_counter()
        items, vectors, label = clustered(num, args.dim, args.queries)
        print(f"{num:,} items: generated in {time.perf_counter() - started:.0f} s", flush=True)
        bench_catalogue(items, vectors, f"{num // 1000}k", args, rows)
        largest = (items, label)
        print(f"  peak memory so far {peak_rss_mib():,.0f} MiB; busy meanwhile: {others()}", flush=True)
    if args.model:
        for num in (None, args.grow):
            bench_model(args.model, num, args, rows)
    header = ["catalogue, method", "threads", "ms/vector", "CPU ms/vector", "vectors/s",
              "vectors/CPU s", "recall@20", "build s / CPU s", "MiB"]
    print(text_table(header, rows))
    if args.end_to_end and largest is not None and not args.model:
        threads = max(args.threads)
        built, timer, report = bench_end_to_end(*largest, args.end_to_end, threads)
        END_TO_END.append((f"{len(largest[0]) // 1000}k", threads, built, timer, args.end_to_end,
                           report))
    for label, threads, built, timer, sessions, report in END_TO_END:
        rate, cpu_rate = sessions / timer.wall, sessions / timer.cpu
        print(f"\nend to end, {label}, {threads} threads: index built in {built.wall:.1f} s "
              f"({built.cpu:.1f} CPU s); {sessions:,} sessions in {timer.wall:.1f} s "
              f"({timer.cpu:.1f} CPU s): {rate:,.0f} sessions/s, {cpu_rate:,.0f} per CPU second")
        print(f"  report: {report}")
        # The sample sessions (nprobe's choice, then the recall) are scored exactly: a fixed
        # cost, taken apart at the exact path's CPU ms a vector of this catalogue (table).
        samples = report["recall_sessions"] + report.get("nprobe_chosen_on", 0)
        sample_cpu = samples * EXACT_CPU_MS.get(label, 0.0) / 1000
        per_session = (timer.cpu - sample_cpu) / max(sessions - samples, 1)
        million = (built.cpu + sample_cpu + 1_000_000 * per_session) / threads
        print(f"  {samples:,} sample sessions scored exactly too (about {sample_cpu:.1f} CPU s); the "
              f"others {1000 * per_session:.3f} CPU ms a session")
        print(f"  1,000,000 sessions on {threads} cores to itself (CPU time / {threads}): about "
              f"{million:.0f} s ({million / 60:.1f} min), index build and samples included")
    print(f"\nmachine: {machine()} at end; peak memory {peak_rss_mib():,.0f} MiB; "
          f"busy at end: {others()}")


if __name__ == "__main__":
    main()
