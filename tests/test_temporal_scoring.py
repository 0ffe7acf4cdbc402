"""A temporal_edges model at scoring time: its edges get the gaps prepare writes (the seconds
between the two kept clicks of each edge's latest transition) from the clicks' times, so
that scoring a prefix gives the scores evaluation gives from the graph Parquet's edge_gap."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from srgnn.data.graph import click_gaps
from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.reader import GraphParquetReader, parquet_files
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import Recommender
from srgnn.serving.rows import recommend_table

from conftest import write_text

T0 = dt.datetime(2023, 11, 15, tzinfo=dt.timezone.utc)


def temporal_model(num_items: int, seed: int = 0) -> SRGNN:
    """A temporal_edges model whose gap weights differ from bucket to bucket."""
    torch.manual_seed(seed)
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=8, temporal_edges=True))
    with torch.no_grad():
        model.edges.gap_weights.copy_(torch.randn_like(model.edges.gap_weights) * 2.0)
    return model.eval()


class SeenBatches:
    """Keeps the batches a scorer's model embeds (the model itself still does the work)."""

    def __init__(self, scorer: Scorer) -> None:
        self.batches = []
        embed = scorer.model.session_embedding

        def recording(batch):
            self.batches.append(batch)
            return embed(batch)

        scorer.model.session_embedding = recording


def test_click_gaps_by_hand():
    # clicks at t = 0, 1, 100 | 5, 4 (out of order: 0) | one click | none
    times = np.array([0.0, 1.0, 100.0, 5.0, 4.0, 7.0])
    assert click_gaps(times, np.array([0, 3, 5, 6, 6])).tolist() == [0, 1, 99, 0, 0, 0]
    stamps = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:01.000001"], dtype="datetime64[us]")
    assert click_gaps(stamps, np.array([0, 2])).tolist() == [0.0, np.float32(1.000001)]
    with pytest.raises(ValueError, match="offsets"):
        click_gaps(times, np.array([0, 4]))


def test_times_rebuilt_from_edge_gaps_give_the_same_graphs():
    from srgnn.data.graph import build_graphs, edge_gap_times

    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 9, 200)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = rng.integers(1, 5, offsets[-1])  # few items: many repeated transitions
    gaps = np.where(rng.random(len(values)) < 0.2, rng.random(len(values)) * 1e-4,
                    rng.exponential(3000.0, len(values)))
    graphs = build_graphs(values, offsets, gaps)
    again = build_graphs(values, offsets, click_gaps(edge_gap_times(graphs), offsets))
    assert np.array_equal(again.edge_src, graphs.edge_src) and np.array_equal(again.edge_dst, graphs.edge_dst)
    large = graphs.edge_gap >= 0.01
    assert np.array_equal(again.edge_gap[large], graphs.edge_gap[large])
    np.testing.assert_allclose(again.edge_gap[~large], graphs.edge_gap[~large], atol=1e-9)
    # A, B, C, B, C with gaps 1, 2, 4, 8: B -> C keeps 8, so both of its transitions get 8
    abcbc = build_graphs(np.array([1, 2, 3, 2, 3]), np.array([0, 5]), np.array([0.0, 1, 2, 4, 8]))
    seconds = edge_gap_times(abcbc).astype(np.int64) / 1e9
    assert seconds.tolist() == [0, 1, 9, 13, 21]
    with pytest.raises(ValueError, match="no edge_gap"):
        edge_gap_times(build_graphs(np.array([1, 2]), np.array([0, 2])))


def test_the_scorer_gives_each_edge_the_seconds_between_its_clicks():
    scorer = Scorer(temporal_model(5), precision="float32")
    seen = SeenBatches(scorer)
    # A, B, C at t = 0, 1, 100: edges A->B (1 s, bucket 1) and B->C (99 s, bucket 6)
    scorer.top_k(np.array([1, 2, 3]), np.array([0, 3]), k=3, times=np.array([0.0, 1.0, 100.0]))
    gaps = seen.batches[-1].edge_gap
    assert gaps.tolist() == [1.0, 99.0]
    assert torch.log2(1 + gaps).floor().tolist() == [1.0, 6.0]
    # without times every gap counts as 0
    scorer.top_k(np.array([1, 2, 3]), np.array([0, 3]), k=3)
    assert seen.batches[-1].edge_gap.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="one value per click"):
        scorer.top_k(np.array([1, 2, 3]), np.array([0, 3]), k=3, times=np.array([0.0, 1.0]))


def test_identical_prefixes_with_other_gaps_are_scored_apart():
    scorer = Scorer(temporal_model(5), precision="float32")
    seen = SeenBatches(scorer)
    # A, B, C, B three times: B's in-edges A->B and C->B weigh by their gaps (1 s and 1 s,
    # twice; then 1 s and 3000 s)
    values = np.array([1, 2, 3, 2] * 3)
    times = np.array([0.0, 1.0, 2.0, 3.0] * 2 + [0.0, 1.0, 2.0, 3002.0])
    top = scorer.top_k(values, np.array([0, 4, 8, 12]), k=5, times=times)
    assert sorted(seen.batches[-1].edge_gap.tolist()) == [1, 1, 1, 1, 1, 3000]  # the first two: once
    assert np.array_equal(top.scores[0], top.scores[1])
    assert not np.allclose(np.sort(top.scores[0]), np.sort(top.scores[2]))


def test_the_recommender_keeps_the_time_between_known_clicks_across_an_unknown_one():
    scorer = Scorer(temporal_model(3), precision="float32")
    seen = SeenBatches(scorer)
    recommender = Recommender(scorer, Vocabulary(np.array(["a", "b", "c"], dtype=object),
                                                 np.array([0, 3, 2, 1])))
    stamps = [[T0, T0 + dt.timedelta(seconds=30), T0 + dt.timedelta(seconds=90),
               T0 + dt.timedelta(seconds=91)]]
    recs = recommender.recommend([["a", "z", "b", "a"]], k=3, times=stamps)
    assert recs.unknown_clicks.tolist() == [1]
    # z is unknown: a -> b spans the 90 s from a to b; b -> a 1 s (nodes a=0, b=1)
    batch = seen.batches[-1]
    assert list(zip(batch.edge_src.tolist(), batch.edge_dst.tolist(), batch.edge_gap.tolist())) == [
        (0, 1, 90.0), (1, 0, 1.0)]
    with pytest.raises(ValueError, match="one time per click"):
        recommender.recommend([["a", "z", "b", "a"]], k=3, times=[[0.0, 1.0]])


def test_neighbours_prepended_to_a_short_session_take_its_first_click_s_time():
    from srgnn.model.baselines import ItemKNN
    from srgnn.serving.recommender import ShortSessionFallback

    knn = ItemKNN(regularization=0.0).fit([[1, 2], [1, 2], [2, 1], [1, 3], [3, 1], [2, 4]], num_items=4)
    scorer = Scorer(temporal_model(4), precision="float32")
    seen = SeenBatches(scorer)
    recommender = Recommender(
        scorer, Vocabulary(np.array(["i1", "i2", "i3", "i4"], dtype=object), np.array([0, 5, 4, 2, 1])),
        ShortSessionFallback(knn, (), {}, augmented=(2,), neighbors=1))
    # i4, i2 at t = 10, 60 becomes i1, i4, i2 (i1 via i2): i1 -> i4 0 s, i4 -> i2 50 s; the
    # three-click session i3, i1, i3 is not augmented
    recommender.recommend([["i4", "i2"], ["i3", "i1", "i3"]], k=2,
                          times=[[10.0, 60.0], [0.0, 4.0, 5.0]])
    batch = seen.batches[-1]
    items = batch.node_items.tolist()
    edges = {(items[s], items[d]): gap for s, d, gap in
             zip(batch.edge_src.tolist(), batch.edge_dst.tolist(), batch.edge_gap.tolist())}
    assert edges == {(1, 4): 0.0, (4, 2): 50.0, (3, 1): 4.0, (1, 3): 1.0}


def test_a_blend_gives_the_times_to_its_srgnn_part():
    from srgnn.model.baselines import BASELINES
    from srgnn.serving.blend import BlendRanker
    from srgnn.serving.recommender import BaselineRanker

    pop = BASELINES["pop"]().fit([[1, 2], [2, 3], [3, 4], [4, 5], [5, 1]], num_items=5)
    scorer = Scorer(temporal_model(5, seed=12), precision="float32")  # times change its order
    blend = Recommender(BlendRanker(scorer, BaselineRanker(pop), weight=1.0, pool=5),
                        Vocabulary(np.array(list("abcde"), dtype=object), np.array([0, 2, 2, 2, 2, 2])))
    assert blend.uses_times
    times = [[0.0, 1.0, 2.0, 3002.0]]
    alone = Recommender(scorer, blend.vocabulary).recommend([list("abcb")], 5, times=times)
    # weight 1: SR-GNN's own ranking, the timed one
    assert blend.recommend([list("abcb")], 5, times=times).item_ids.tolist() == alone.item_ids.tolist()
    assert blend.recommend([list("abcb")], 5).item_ids.tolist() != alone.item_ids.tolist()
    assert not BaselineRanker(pop).uses_times


def test_a_model_without_temporal_edges_ignores_the_times():
    torch.manual_seed(0)
    scorer = Scorer(SRGNN(ModelConfig(num_items=5, hidden_size=8)), precision="float32")
    assert not scorer.uses_times
    plain = scorer.top_k(np.array([1, 2, 3]), np.array([0, 3]), k=5)
    timed = scorer.top_k(np.array([1, 2, 3]), np.array([0, 3]), k=5, times=np.array([0.0, 5.0, 900.0]))
    assert np.array_equal(plain.scores, timed.scores) and np.array_equal(plain.items, timed.items)


# ------------------------------------------------------------------------------------------
# Serving against training: prepare's graph Parquet and the scoring path on the same prefixes
# ------------------------------------------------------------------------------------------
DAY = 86_400
BASE = 1_700_006_400  # 2023-11-15 00:00:00 UTC
# (session, day, [(seconds after the session's start, item)]): gaps across bucket bounds (0,
# 1, 3, 7, 99, 4000 s), a transition taken twice (b -> c, 99 s then 7 s: the latest counts) and
# the rare item x, which prepare removes: a -> b spans the 40 s across it (bucket 5; the 10 s
# from x would be bucket 3, that of a's other out-edge a -> c).
SESSIONS = [
    ("s1", 0, [(0, "a"), (1, "b"), (100, "c"), (103, "b"), (110, "c"), (4110, "d")]),
    ("s2", 1, [(0, "a"), (30, "x"), (40, "b"), (40, "a"), (47, "c"), (50, "d")]),
    ("s3", 2, [(0, "d"), (7, "c"), (8, "b"), (3008, "a"), (3011, "d")]),
    ("s4", 3, [(0, "a"), (60, "b")]),
    ("s5", 4, [(0, "b"), (60, "c")]),
]


@pytest.mark.spark
@pytest.mark.slow
def test_scoring_with_click_times_gives_the_scores_of_the_prepared_graphs(spark, tmp_path):
    from srgnn.config import PrepareConfig
    from srgnn.data.prepare import run_prepare

    lines = ["session_id,timestamp,item_id"]
    for sid, day, clicks in SESSIONS:
        lines += [f"{sid},{BASE + day * DAY + t},{item}" for t, item in clicks]
    out = tmp_path / "run"
    run_prepare(spark, write_text(tmp_path / "clicks.csv", "\n".join(lines) + "\n"), str(out),
                PrepareConfig(min_item_support=2, test_days=1, valid_days=1))
    vocabulary = Vocabulary.read(out / "vocab.parquet")
    assert "x" not in set(vocabulary.item_ids)  # removed as rare before the gaps were taken

    # Evaluation: the graph Parquet's rows (with their edge_gap) through the model.
    files = parquet_files(out / "graphs" / "train")
    examples = pa.concat_tables([pq.read_table(f) for f in files])
    assert "edge_gap" in examples.column_names
    batch = next(iter(GraphParquetReader(files, batch_size=len(examples))))
    assert batch.targets.tolist() == examples.column("target").to_pylist()  # same row order
    model = temporal_model(vocabulary.num_items)
    with torch.no_grad():
        evaluated = model(batch).numpy()  # (examples, N): column j is item j + 1

    # Scoring: each example's raw clicks up to its prefix's last kept click, with their times,
    # as the scoring job's session table holds them.
    clicks = {sid: [(T0 + dt.timedelta(days=day, seconds=t), item) for t, item in c]
              for sid, day, c in SESSIONS}
    sessions, times = [], []
    for sid, length in zip(examples.column("session_id").to_pylist(),
                           examples.column("prefix_length").to_pylist()):
        kept = [i for i, (_, item) in enumerate(clicks[sid]) if item != "x"]
        prefix = clicks[sid][: kept[length - 1] + 1]
        sessions.append([item for _, item in prefix])
        times.append([stamp for stamp, _ in prefix])
    assert ["a", "x", "b"] in sessions  # a prefix across the removed click
    table = pa.table({"session_id": pa.array([str(i) for i in range(len(sessions))]),
                      "items": pa.array(sessions, pa.list_(pa.string())),
                      "times": pa.array(times, pa.list_(pa.timestamp("us", tz="UTC")))})
    n = vocabulary.num_items
    recommender = Recommender(Scorer(model, precision="float32"), vocabulary)

    def scored(session_table) -> np.ndarray:
        rows = recommend_table(recommender, session_table, n, "v1").to_pydict()
        scores = np.full((len(sessions), n), np.nan)
        columns = vocabulary.indices(np.array(rows["item_id"], dtype=object)) - 1
        scores[np.array(rows["session_id"], dtype=int), columns] = rows["score"]
        return scores

    np.testing.assert_allclose(scored(table), evaluated, rtol=1e-5, atol=1e-5)
    # Without the times (gap 0 everywhere) the same prefixes score otherwise.
    untimed = scored(table.drop_columns(["times"]))
    assert np.abs(untimed - evaluated).max() > 1e-3

    # The run folder's examples as evaluation gives them to a recommender (srgnn evaluate
    # --run, the gate): click times rebuilt from edge_gap give the same scores again.
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate, evaluate_graphs

    held = heldout.from_run(out, "train")
    assert list(held.targets) == list(vocabulary.ids(examples.column("target").to_numpy()))
    table = pa.table({"session_id": table.column("session_id"), "items": held.sessions,
                      "times": held.times})
    np.testing.assert_allclose(scored(table), evaluated, rtol=1e-5, atol=1e-5)
    by_recommender = evaluate(recommender, held, k=3)
    by_graphs = evaluate_graphs(model, files, vocabulary.popularity, k=3)
    assert (by_recommender["HR@3"], by_recommender["MRR@3"]) == pytest.approx(
        (by_graphs["HR@3"], by_graphs["MRR@3"]))


@pytest.mark.spark
@pytest.mark.slow
def test_both_scoring_engines_score_a_temporal_model_with_the_click_times(spark, tmp_path):
    from srgnn.config import Settings
    from srgnn.serving.score import score_day
    from srgnn.warehouse import Warehouse

    items = ["a", "b", "c", "d", "e"]
    recommender = Recommender(Scorer(temporal_model(len(items), seed=16), precision="float32"),
                              Vocabulary(np.array(items, dtype=object), np.array([0, 5, 4, 3, 2, 1])))
    folder = tmp_path / "recommender"
    recommender.save(folder)
    # the same items at other times; "partly" has an unknown click between a and b
    sessions = {"quick": [(0, "a"), (1, "b"), (100, "c"), (103, "b"), (4000, "d")],
                "slow": [(0, "a"), (3000, "b"), (3001, "c"), (3100, "b"), (3101, "d")],
                "partly": [(0, "a"), (30, "zzz"), (90, "b"), (91, "a"), (92, "c")]}
    start = 1714608000  # 2024-05-02 00:00:00 UTC
    lines = ["session_id,timestamp,item_id"] + [
        f"{sid},{start + t},{item}" for sid, clicks in sessions.items() for t, item in clicks]
    clicks = write_text(tmp_path / "clicks" / "day.csv", "\n".join(lines) + "\n")

    def stored(settings) -> dict:
        with Warehouse.connect(settings.warehouse) as warehouse:
            rows = warehouse.run_query("day_recommendations", ds="2024-05-02").to_dicts()
        return {(r["session_id"], r["item_id"]): r["score"] for r in rows}

    found = {}
    for engine in ("local", "spark"):
        settings = Settings(home=tmp_path / engine, warehouse_url=f"duckdb:///{tmp_path / engine}.duckdb")
        score_day(settings, clicks, "2024-05-02", model_uri=str(folder), top_k=5, spark=spark,
                  engine=engine)
        found[engine] = stored(settings)
    assert found["local"].keys() == found["spark"].keys()
    for key, score in found["local"].items():
        assert found["spark"][key] == pytest.approx(score, abs=1e-6)

    names = list(sessions)
    stamps = [[T0.replace(year=2024, month=5, day=2) + dt.timedelta(seconds=t) for t, _ in sessions[sid]]
              for sid in names]
    lists = [[item for _, item in sessions[sid]] for sid in names]

    def expected(recs) -> dict:
        return {(sid, item): score for sid, row_items, row_scores in
                zip(names, recs.item_ids.tolist(), recs.scores.tolist())
                for item, score in zip(row_items, row_scores)}

    timed = expected(recommender.recommend(lists, 5, times=stamps))
    assert found["local"].keys() == timed.keys()
    for key, score in timed.items():
        assert found["local"][key] == pytest.approx(score, abs=1e-6)
    untimed = recommender.recommend(lists, 5)
    assert max(abs(expected(untimed).get(key, 0.0) - score) for key, score in timed.items()) > 1e-3

    # Held-out raw clicks (srgnn evaluate --clicks) keep their times too: each session's
    # target is the timed list's item at the first rank where the untimed list differs.
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate

    lists_timed = recommender.recommend(lists, 5, times=stamps).item_ids
    differs = lists_timed != untimed.item_ids
    assert differs.any()
    ranks = np.where(differs.any(axis=1), differs.argmax(axis=1), 0)  # 0-based
    targets = write_text(tmp_path / "targets.csv", "\n".join(
        ["session_id,item_id", *[f"{sid},{lists_timed[i, r]}" for i, (sid, r) in enumerate(zip(names, ranks))],
         "never-seen,a"]) + "\n")
    held_out = heldout.from_clicks(spark, clicks, targets, recommender.vocabulary)
    assert held_out.times is not None and held_out.absent.tolist() == [False, False, False, True]
    assert evaluate(recommender, held_out, k=5)["MRR@5"] == pytest.approx(sum(1 / (ranks + 1)) / 4)
