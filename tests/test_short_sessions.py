"""Short sessions: augmentation with co-click neighbours, and the by-length choice of the way
each short length is answered (the model, the augmented model, item-KNN)."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from srgnn.data.ragged import from_lists
from srgnn.data.vocab import Vocabulary
from srgnn.evaluation.heldout import HeldOut
from srgnn.model.baselines import ItemKNN
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer, TopK
from srgnn.serving.recommender import SOURCE_MODEL, Recommender, ShortSessionFallback
from srgnn.training.fallback import (WAY_AUGMENTED, WAY_ITEM_KNN, compare_short_ways,
                                     describe_fallback, short_session_routes)

IDS = np.array(["i1", "i2", "i3", "i4", "i5", "i6"], dtype=object)
# Co-clicks: 1-2 in three sessions, 1-3 in two, 2-4 in one, 5-6 in one. Sessions holding each
# item: 1: 5, 2: 4, 3: 2, 4: 1, 5: 1, 6: 1. With lambda 0 the similarity is the cosine
# c_ij / sqrt(c_i c_j): sim(1,2) = 3/sqrt(20) = 0.671, sim(1,3) = 2/sqrt(10) = 0.632,
# sim(2,4) = 1/sqrt(4) = 0.5, sim(5,6) = 1.
TRAIN = [[1, 2], [1, 2], [2, 1], [1, 3], [3, 1], [2, 4], [5, 6]]


@pytest.fixture()
def knn():
    return ItemKNN(regularization=0.0).fit(TRAIN, num_items=6)


def _lists(values, offsets):
    return [values[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def test_augmentation_prepends_the_co_clicked_items_and_keeps_the_last_click_last(knn):
    sessions = [[1], [3, 1], [2], [5], [4, 2], [2, 3], []]
    values, offsets = from_lists(sessions)
    out = _lists(*knn.augment(values, offsets, 2))
    assert out[0] == [3, 2, 1]  # 2 (0.671) nearest the click, then 3 (0.632)
    assert out[1] == [2, 3, 1]  # 3 is in the session: only 2 is left to add
    assert out[2] == [4, 1, 2]  # 1 (0.671) before 4 (0.5)
    assert out[3] == [6, 5]  # only one neighbour exists
    assert out[4] == [1, 4, 2]  # 4 is in the session; 1 via 2
    assert out[5] == [4, 1, 2, 3]  # 1: 0.671 + 0.632 (both clicks), 4: 0.5
    assert out[6] == []
    for before, after in zip(sessions, out):
        assert after[len(after) - len(before):] == before  # the clicks, in order, last last

    picked = _lists(*knn.augment(values, offsets, 1, rows=np.array([1, 0, 0, 0, 1, 0, 0], bool)))
    assert picked[0] == [2, 1] and picked[4] == [1, 4, 2]
    assert picked[1:4] == sessions[1:4] and picked[5:] == sessions[5:]


def _srgnn(num_items=6):
    torch.manual_seed(0)
    return Recommender(Scorer(SRGNN(ModelConfig(num_items=num_items, hidden_size=8))),
                       Vocabulary(IDS, np.array([0, 5, 4, 2, 1, 1, 1])))


def test_the_model_scores_augmented_sessions_and_a_saved_model_keeps_the_augmentation(knn, tmp_path):
    plain = _srgnn()
    fallback = ShortSessionFallback(knn, (), {"1": "why"}, augmented=(1,), neighbors=2)
    augmented = plain.with_short_fallback(fallback)
    sessions = [["i1"], ["i9", "i1"], ["i3", "i1"], ["i5", "i6", "i5", "i6"]]
    out = augmented.recommend(sessions, k=4)
    assert out.source.tolist() == [SOURCE_MODEL] * 4 and out.unknown_clicks.tolist() == [0, 1, 0, 0]
    by_hand = plain.ranker.top_k(*from_lists([[3, 2, 1]]), 4)  # session [1] augmented as above
    for row in (0, 1):
        assert out.item_ids[row].tolist() == IDS[by_hand.items[0] - 1].tolist()
        np.testing.assert_allclose(out.scores[row], by_hand.scores[0], rtol=1e-5, atol=1e-6)
    alone = plain.recommend(sessions[2:], k=4)  # lengths 2 and 4 are not augmented
    assert out.item_ids[2:].tolist() == alone.item_ids.tolist()
    assert out.item_ids[0].tolist() != plain.recommend(sessions[:1], k=4).item_ids[0].tolist()

    augmented.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.short_fallback.augmented == (1,) and loaded.short_fallback.neighbors == 2
    assert loaded.short_fallback.lengths == () and loaded.short_fallback.evidence == {"1": "why"}
    again = loaded.recommend(sessions, k=4)
    assert again.item_ids.tolist() == out.item_ids.tolist()
    np.testing.assert_allclose(again.scores, out.scores, rtol=1e-6)


def test_a_fallback_routes_a_length_one_way_and_its_summary_rebuilds_it(knn):
    with pytest.raises(ValueError, match="either"):
        ShortSessionFallback(knn, (1,), {}, augmented=(1, 2), neighbors=3)
    with pytest.raises(ValueError, match="neighbour"):
        ShortSessionFallback(knn, (), {}, augmented=(1,), neighbors=0)
    both = ShortSessionFallback(knn, (3,), {}, augmented=(1, 2), neighbors=4)
    assert both.summary() == {"lengths": [3], "augmented": [1, 2], "neighbors": 4}
    assert ShortSessionFallback.from_summary(knn, both.summary()) == both
    assert ShortSessionFallback.from_summary(knn, {"lengths": [2]}).augmented == ()
    assert ShortSessionFallback.from_summary(knn, {"lengths": []}) is None


class FirstClickRanker:
    """Ranks the prefix's first click first, then the other items by index: a stand-in model
    that the augmentation changes (its first click is then a neighbour)."""

    num_items = 6

    def top_k(self, values, offsets, k):
        lengths = np.diff(offsets)
        first = np.where(lengths > 0, values[np.minimum(offsets[:-1], max(len(values) - 1, 0))], 1)
        rest = np.tile(np.arange(1, self.num_items + 1), (len(first), 1))
        rest = rest[rest != first[:, None]].reshape(len(first), -1)
        items = np.concatenate([first[:, None], rest], axis=1)[:, :k]
        scores = np.tile(np.arange(items.shape[1], 0, -1, dtype=np.float64), (len(first), 1))
        return TopK(items=items, scores=scores, empty=lengths == 0)


def test_the_choice_by_length_takes_the_augmented_model_where_validation_shows_it_best(knn):
    # length 1: [1] -> target 3. Augmented [3, 2, 1] starts with 3 (a hit at rank 1); item-KNN
    #   ranks 3 second, the model alone ranks 1 first: only augmentation hits at K = 1.
    # length 2: [4, 2] -> target 4: the model alone hits; augmented [1, 4, 2] and item-KNN
    #   (neighbours of 2: 1, 4) do not.
    # length 3: [5, 6, 5] -> target 6: item-KNN (neighbours of 5: 6) hits; nothing to add.
    examples = [(["i1"], "i3")] * 120 + [(["i4", "i2"], "i4")] * 110 + [(["i5", "i6", "i5"], "i6")] * 100
    valid = HeldOut(pa.array([s for s, _ in examples], type=pa.list_(pa.string())),
                    np.array([t for _, t in examples], dtype=object),
                    np.array([len(s) for s, _ in examples]), Vocabulary(IDS, np.array([0, 5, 4, 2, 1, 1, 1])))
    model = Recommender(FirstClickRanker(), valid.catalogue)
    by_way = compare_short_ways(model, knn, valid, 1, augment=2)
    assert {way: [by_way[way][n]["HR@1"] for n in "123"] for way in by_way} == {
        "srgnn": [0.0, 1.0, 0.0], WAY_AUGMENTED: [1.0, 0.0, 0.0], WAY_ITEM_KNN: [0.0, 0.0, 1.0]}
    assert by_way[WAY_AUGMENTED]["1"]["examples"] == 120
    assert short_session_routes(by_way, 1) == {1: WAY_AUGMENTED, 3: WAY_ITEM_KNN}
    assert short_session_routes(by_way, 1, min_examples=115) == {1: WAY_AUGMENTED}
    without = compare_short_ways(model, knn, valid, 1, augment=0)
    assert WAY_AUGMENTED not in without and short_session_routes(without, 1) == {3: WAY_ITEM_KNN}

    evidence = {str(n): {way: table[str(n)] for way, table in by_way.items()} for n in (1, 2, 3)}
    chosen = ShortSessionFallback(knn, (3,), evidence, augmented=(1,), neighbors=2)
    text = describe_fallback(chosen, 1)
    assert text.startswith("augmented SR-GNN (+2 neighbours) for 1 click (validation HR@1 100.00 vs SR-GNN 0.00)")
    assert "item-KNN for 3 clicks" in text


@pytest.mark.slow
def test_a_training_compares_the_three_ways_and_registers_the_routes_it_chose(tmp_path):
    from dataclasses import replace

    import mlflow

    from srgnn.config import Settings
    from srgnn.serving import registry
    from srgnn.training.fallback import WAY_MODEL
    from srgnn.training.run import run_training
    from test_training_run import small_run

    run_dir, config = small_run(tmp_path, seed=3, epochs=1, max_examples_per_epoch=200)
    settings = Settings(home=tmp_path / "home")
    trained = run_training(settings, run_dir, replace(config, short_augment=3))
    short = trained["short_fallback"]
    evidence = short["validation_by_length"]
    assert set(evidence) == {"1", "2", "3"}
    assert all(set(evidence[n]) == {WAY_MODEL, WAY_AUGMENTED, WAY_ITEM_KNN} for n in evidence)
    routes = short_session_routes({way: {n: evidence[n][way] for n in evidence}
                                   for way in (WAY_MODEL, WAY_AUGMENTED, WAY_ITEM_KNN)})
    assert short["lengths"] == [n for n, way in routes.items() if way == WAY_ITEM_KNN]
    assert short.get("augmented", []) == [n for n, way in routes.items() if way == WAY_AUGMENTED]
    logged = mlflow.artifacts.load_dict(f"runs:/{trained['run_id']}/short_fallback.json")
    assert logged["1"][WAY_AUGMENTED]["examples"] == evidence["1"][WAY_MODEL]["examples"]
    if routes:
        registry.connect(settings)
        recommender, _ = registry.load_recommender(trained["model_uri"])
        assert recommender.short_fallback.summary()["augmented"] == short["augmented"]
        assert recommender.short_fallback.neighbors == 3


def test_the_choice_by_length_looks_at_the_first_max_valid_examples(tmp_path):
    from srgnn.data.runfolder import RunFolder
    from srgnn.training.fallback import choose_short_fallback

    from test_registry import synthetic_splits, write_run_folder

    run = RunFolder(write_run_folder(tmp_path / "run", synthetic_splits(num_sessions=600, seed=4)))
    model = Recommender(Scorer(SRGNN(ModelConfig(num_items=run.num_items, hidden_size=8))),
                        run.vocabulary)

    def compared(max_examples):
        _, evidence = choose_short_fallback(run, model, max_examples=max_examples)
        return sum(ways["srgnn"]["examples"] for ways in evidence.values())

    everything = compared(None)
    assert 0 < compared(40) <= 40 < everything
