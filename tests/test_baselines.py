"""Baselines on a tiny hand-made training set, with expected lists derived by hand.

Training sessions (chronological; item 7 exists in the catalogue but is never clicked)::

    s0: 1 2 3      s1: 2 3 4      s2: 2 3
    s3: 2 4        s4: 5 1 2      s5: 6 6 5

Clicks: item 2: 5, item 3: 3, items 1, 4, 5, 6: 2 each, item 7: 0, so the popularity order
(ties by smaller index) is 2, 3, 1, 4, 5, 6, 7.
Sessions holding each item (item-KNN support): 1: 2, 2: 5, 3: 3, 4: 2, 5: 2, 6: 1.
Consecutive transitions: 1->2 x2, 2->3 x3, 2->4, 3->4, 5->1, 6->6, 6->5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from srgnn.data.ragged import from_lists
from srgnn.model.baselines import (
    BASELINES,
    FirstOrderMarkov,
    ItemKNN,
    Popularity,
    SessionKNN,
    SessionPopularity,
    VectorSessionKNN,
    make_baseline,
)

TRAIN = [[1, 2, 3], [2, 3, 4], [2, 3], [2, 4], [5, 1, 2], [6, 6, 5]]
NUM_ITEMS = 7


def recommend_one(model, prefix, k=4):
    items, scores = model.recommend(np.array(prefix, dtype=np.int64), np.array([0, len(prefix)]), k)
    return items[0].tolist(), scores[0].tolist()


def fitted(cls, **params):
    return cls(**params).fit(TRAIN, num_items=NUM_ITEMS)


# -- POP / S-POP -------------------------------------------------------------------------------
def test_pop_recommends_most_clicked_items_to_everybody():
    items, scores = fitted(Popularity).recommend(np.array([6, 6, 5]), np.array([0, 1, 3]), 3)
    assert items.tolist() == [[2, 3, 1], [2, 3, 1]]
    assert scores.tolist() == [[5.0, 3.0, 2.0], [5.0, 3.0, 2.0]]


def test_spop_ranks_session_items_by_count_then_fills_with_popular():
    model = fitted(SessionPopularity)
    assert recommend_one(model, [4, 1, 4]) == ([4, 1, 2, 3], [2.0, 1.0, 0.0, 0.0])
    # equal in-session counts: the globally more popular item (3) first
    assert recommend_one(model, [5, 3])[0] == [3, 5, 2, 1]


# -- Markov ------------------------------------------------------------------------------------
def test_markov_recommends_successors_of_the_last_item():
    model = fitted(FirstOrderMarkov)
    # after 2: 3 (3 of 4 transitions), 4 (1 of 4), then popular items not yet listed
    assert recommend_one(model, [1, 2]) == ([3, 4, 2, 1], [0.75, 0.25, 0.0, 0.0])
    # after 6: 6 and 5 (1/2 each, tie broken by popularity then index), self-loop included
    assert recommend_one(model, [6])[0] == [5, 6, 2, 3]
    # 4 is never followed by anything: popularity
    assert recommend_one(model, [2, 4]) == ([2, 3, 1, 4], [0.0, 0.0, 0.0, 0.0])


def test_unknown_items_are_ignored_and_empty_prefixes_get_popularity():
    model = fitted(FirstOrderMarkov)
    items, _ = model.recommend(np.array([2, 99, 0]), np.array([0, 3, 3]), 3)
    assert items.tolist() == [[3, 4, 2], [2, 3, 1]]  # last known item of row 0 is 2


# -- item-KNN -----------------------------------------------------------------------------------
def test_item_knn_cosine_neighbours_of_the_last_item():
    model = fitted(ItemKNN, regularization=0.0)
    # neighbours of 3: 2 (3 shared sessions / sqrt(3 * 5)), 1 and 4 (1 / sqrt(3 * 2)), then filler 3
    items, scores = recommend_one(model, [5, 3])
    assert items == [2, 1, 4, 3]
    assert scores == pytest.approx([3 / math.sqrt(15), 1 / math.sqrt(6), 1 / math.sqrt(6), 0.0])
    # neighbours of 5: 6 (1/sqrt(2*1)) beats 1 (1/sqrt(2*2)) beats 2 (1/sqrt(2*5)): cosine, not counts
    assert recommend_one(model, [5])[0] == [6, 1, 2, 3]


def test_item_knn_regularisation():
    model = fitted(ItemKNN)  # lambda = 20, alpha = 0.5
    items, scores = recommend_one(model, [5], k=3)
    assert items == [6, 1, 2]
    assert scores == pytest.approx([1 / math.sqrt(22 * 21), 1 / 22, 1 / math.sqrt(22 * 25)])


def test_item_knn_keeps_at_most_num_neighbors():
    model = fitted(ItemKNN, regularization=0.0, num_neighbors=1)
    assert recommend_one(model, [3]) == ([2, 3, 1, 4], pytest.approx([3 / math.sqrt(15), 0, 0, 0]))


# -- session kNN --------------------------------------------------------------------------------
def test_sknn_two_nearest_sessions():
    # prefix {2, 4}: cosine to s3 {2,4} = 1, s1 {2,3,4} = 2/sqrt(6), s2 = 1/2, s0 = s4 = 1/sqrt(6)
    model = fitted(SessionKNN, num_neighbors=2)
    items, scores = recommend_one(model, [2, 4])
    assert items == [2, 4, 3, 1]  # 2 and 4 tie, 2 is more popular; 1 is a filler
    s1, s3 = 2 / math.sqrt(6), 1.0
    assert scores == pytest.approx([s1 + s3, s1 + s3, s1, 0.0])


def test_sknn_all_neighbours():
    model = fitted(SessionKNN)
    items, scores = recommend_one(model, [2, 4], k=5)
    # 2: every session; 4: s1 + s3; 3: s0 + s1 + s2; 1: s0 + s4; 5: s4
    c = 1 / math.sqrt(6)
    assert items == [2, 4, 3, 1, 5]
    assert scores == pytest.approx([c + 2 * c + 0.5 + 1 + c, 2 * c + 1, c + 2 * c + 0.5, 2 * c, c])


def test_sknn_samples_the_most_recent_sessions():
    # only s3 and s4, the two most recent sessions holding 2 or 4, are candidates
    model = fitted(SessionKNN, sample_size=2)
    items, scores = recommend_one(model, [2, 4], k=5)
    c = 1 / math.sqrt(6)
    assert items == [2, 4, 1, 5, 3]  # 3 only comes as a filler
    assert scores == pytest.approx([1 + c, 1, c, c, 0])
    # with explicit times making s0 and s1 the most recent ones
    model = SessionKNN(sample_size=2).fit(TRAIN, num_items=NUM_ITEMS, session_times=[6, 5, 4, 3, 2, 1])
    assert recommend_one(model, [2, 4])[0] == [2, 3, 4, 1]


def test_vsknn_weights_recent_prefix_positions_more():
    # prefix 4, 2, 1 weighs 1/3, 2/3, 1: s0 {1,2,3} and s4 {5,1,2} score 5/3, the rest less
    model = fitted(VectorSessionKNN, num_neighbors=2)
    items, scores = recommend_one(model, [4, 2, 1])
    assert items == [2, 1, 3, 5]
    assert scores == pytest.approx([10 / 3, 10 / 3, 5 / 3, 5 / 3])
    # plain SKNN picks s3 (cosine 2/sqrt(6)) and then the most recent of the 2/3 ties, s4
    assert recommend_one(fitted(SessionKNN, num_neighbors=2), [4, 2, 1])[0] == [2, 4, 1, 5]


def test_vsknn_repeated_item_takes_its_latest_weight():
    # prefix 2, 4, 2: item 2 weighs 1 (position 3 of 3, not 1/3 from position 1), item 4 weighs
    # 2/3; s1 {2,3,4} and s3 {2,4} score 5/3, the sessions holding only 2 score 1
    model = fitted(VectorSessionKNN, num_neighbors=2)
    assert recommend_one(model, [2, 4, 2]) == ([2, 4, 3, 1], pytest.approx([10 / 3, 10 / 3, 5 / 3, 0]))


# -- properties of every baseline ---------------------------------------------------------------
def random_sessions(rng, num_sessions, num_items):
    lengths = rng.integers(1, 9, size=num_sessions)
    popularity = 1.0 / np.arange(1, num_items + 1)  # skewed, like real clicks
    return [list(rng.choice(num_items, size=n, p=popularity / popularity.sum()) + 1) for n in lengths]


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_lists_are_valid(name):
    rng = np.random.default_rng(0)
    train = random_sessions(rng, 300, 60)
    prefixes = random_sessions(rng, 200, 70) + [[]]  # items 61..70 are unknown to training
    values, offsets = from_lists(prefixes)
    model = make_baseline(name).fit(train, num_items=60)
    k = 20
    items, scores = model.recommend(values, offsets, k)
    assert items.shape == (len(prefixes), k) and scores.shape == (len(prefixes), k)
    assert items.dtype == np.int64 and scores.dtype == np.float64
    assert items.min() >= 1 and items.max() <= 60  # never the padding index
    assert all(len(set(row)) == k for row in items.tolist())  # never a duplicate
    assert (np.diff(scores, axis=1) <= 1e-12).all()  # best first
    assert model.recommend(values, offsets, 60)[0].shape == (len(prefixes), 60)  # whole catalogue


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_same_results_from_arrow_input(name):
    pa = pytest.importorskip("pyarrow")
    from_lists = make_baseline(name).fit(TRAIN, num_items=NUM_ITEMS)
    from_arrow = make_baseline(name).fit(pa.array(TRAIN, type=pa.list_(pa.int32())), num_items=NUM_ITEMS)
    values, offsets = np.array([1, 2, 6, 5, 4]), np.array([0, 2, 4, 5])
    assert (from_lists.recommend(values, offsets, 5)[0] == from_arrow.recommend(values, offsets, 5)[0]).all()


def test_errors():
    with pytest.raises(ValueError):
        make_baseline("nope")
    with pytest.raises(RuntimeError):
        Popularity().recommend(np.array([1]), np.array([0, 1]), 1)
    with pytest.raises(ValueError):  # more items asked for than exist
        fitted(Popularity).recommend(np.array([1]), np.array([0, 1]), 8)
    with pytest.raises(ValueError):  # item 0 is padding
        Popularity().fit([[0, 1]])
    with pytest.raises(ValueError):  # offsets do not describe the values
        fitted(Popularity).recommend(np.array([1, 2]), np.array([0, 1]), 1)


def test_evaluate_baselines_on_a_run_folder(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from srgnn.data.runfolder import RunFolder
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate_all, fit_baselines
    from srgnn.evaluation.report import format_table

    (tmp_path / "sessions" / "train").mkdir(parents=True)
    (tmp_path / "graphs" / "test").mkdir(parents=True)
    ts = pa.array(np.arange(len(TRAIN)) * 10**9, type=pa.timestamp("ns", tz="UTC"))
    pq.write_table(
        pa.table({"session_id": [f"s{i}" for i in range(len(TRAIN))],
                  "items": pa.array(TRAIN, type=pa.list_(pa.int32())), "start_ts": ts, "end_ts": ts}),
        tmp_path / "sessions" / "train" / "part-0.parquet",
    )
    prefixes = [[1, 2], [6], [2, 4]]
    pq.write_table(
        pa.table({"session_id": ["t0", "t1", "t2"], "prefix": pa.array(prefixes, type=pa.list_(pa.int32())),
                  "target": pa.array([3, 5, 3], type=pa.int32()),
                  "prefix_length": pa.array([2, 1, 2], type=pa.int32())}),
        tmp_path / "graphs" / "test" / "part-0.parquet",
    )
    clicks = np.bincount(np.concatenate(TRAIN), minlength=8)[1:]
    pq.write_table(pa.table({"item_id": [f"item-{i}" for i in range(1, 8)],
                             "item_index": pa.array(range(1, 8), type=pa.int32()),
                             "train_clicks": pa.array(clicks, type=pa.int64())}),
                   tmp_path / "vocab.parquet")
    run = RunFolder(tmp_path)
    sessions = run.sessions("train")
    assert sessions.end_times.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # epoch seconds
    assert sessions.offsets.tolist() == [0, 3, 6, 8, 10, 13, 16]
    examples = run.examples("test")
    assert examples.prefix_values.tolist() == [1, 2, 6, 2, 4]
    assert examples.prefix_offsets.tolist() == [0, 2, 3, 5]
    held_out = heldout.from_run(run)
    assert held_out.sessions.to_pylist() == [["item-1", "item-2"], ["item-6"], ["item-2", "item-4"]]
    assert held_out.targets.tolist() == ["item-3", "item-5", "item-3"]

    models, fit_seconds = fit_baselines(run, ["pop", "markov"])
    assert set(fit_seconds) == {"pop", "markov"}
    results = evaluate_all(models, held_out, k=2)
    # POP lists 2, 3 for everyone: targets 3, 5, 3 -> ranks 2, miss, 2
    assert results["pop"]["HR@2"] == pytest.approx(2 / 3)
    assert results["pop"]["MRR@2"] == pytest.approx(1 / 3)
    # Markov: after 2 -> 3, 4 (hit at 1); after 6 -> 5, 6 (hit at 1); after 4 -> 2, 3 (hit at 2)
    assert results["markov"]["MRR@2"] == pytest.approx((1 + 1 + 0.5) / 3)
    table = format_table(results)
    assert "pop" in table and "markov" in table


def direct_session_knn(train, prefix, num_neighbors, sample_size, positional):
    """The definition of SKNN / V-SKNN written as a plain loop over training sessions:
    {item: score} of one prefix."""
    if positional:
        weights = {item: (p + 1) / len(prefix) for p, item in enumerate(prefix)}  # later wins
    else:
        weights = dict.fromkeys(prefix, 1.0)
    sharing = [n for n in range(len(train)) if weights.keys() & set(train[n])]
    sample = sorted(sharing, reverse=True)[:sample_size]  # later sessions are more recent
    scored = []
    for n in sample:
        shared = weights.keys() & set(train[n])
        if positional:
            similarity = sum(weights[i] for i in shared)
        else:
            similarity = len(shared) / math.sqrt(len(weights) * len(set(train[n])))
        scored.append((-similarity, -n, n, similarity))
    scores = {}
    for *_, n, similarity in sorted(scored)[:num_neighbors]:
        for item in set(train[n]):
            scores[item] = scores.get(item, 0.0) + similarity
    return scores


@pytest.mark.parametrize("cls", [SessionKNN, VectorSessionKNN])
def test_session_knn_matches_a_direct_loop(cls):
    rng = np.random.default_rng(1)
    train = random_sessions(rng, 400, 40)
    prefixes = random_sessions(rng, 60, 40)
    model = cls(num_neighbors=7, sample_size=25).fit(train, num_items=40)
    values, offsets = from_lists(prefixes)
    items, scores = model.recommend(values, offsets, 40)  # the whole catalogue
    for row, prefix in enumerate(prefixes):
        expected = direct_session_knn(train, prefix, 7, 25, positional=cls is VectorSessionKNN)
        got = {i: s for i, s in zip(items[row].tolist(), scores[row].tolist()) if s > 0}
        assert got.keys() == expected.keys()
        assert [got[i] for i in expected] == pytest.approx(list(expected.values()))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_no_prefixes_give_empty_lists(name):
    items, scores = fitted(BASELINES[name]).recommend(np.zeros(0, np.int64), np.array([0]), 3)
    assert items.shape == (0, 3) and scores.shape == (0, 3)
