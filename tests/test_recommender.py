"""Raw ids in, raw ids out: vocabulary mapping, popularity fallback, save/load."""

import numpy as np
import pytest
import torch

from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer
from srgnn.data.vocab import Vocabulary
from srgnn.serving.recommender import SOURCE_MODEL, SOURCE_POPULARITY, Recommender


@pytest.fixture()
def recommender():
    torch.manual_seed(0)
    model = SRGNN(ModelConfig(num_items=5, hidden_size=8))
    # train clicks: a 5, b 1, c 2, d 9, e 2 -> popularity order d, a, c, e, b
    return Recommender(Scorer(model), Vocabulary(np.array(["a", "b", "c", "d", "e"], dtype=object),
                                                 np.array([0, 5, 1, 2, 9, 2])))


def test_unknown_items_are_skipped_and_counted(recommender):
    direct = recommender.ranker.top_k(np.array([1, 2]), np.array([0, 2]), k=3)
    out = recommender.recommend([["a", "zz", "b", "yy"]], k=3)
    assert out.unknown_clicks.tolist() == [2]
    assert out.source.tolist() == [SOURCE_MODEL]
    assert out.item_ids[0].tolist() == [["a", "b", "c", "d", "e"][i - 1] for i in direct.items[0]]
    np.testing.assert_allclose(out.scores[0], direct.scores[0], rtol=1e-6)


def test_sessions_without_known_items_get_the_popularity_ranking(recommender):
    out = recommender.recommend([["zz"], [], ["d"]], k=4)
    assert out.source.tolist() == [SOURCE_POPULARITY, SOURCE_POPULARITY, SOURCE_MODEL]
    assert out.item_ids[0].tolist() == ["d", "a", "c", "e"]  # 9, 5, 2 (c before e: lower index), 2
    np.testing.assert_allclose(out.scores[0], [9 / 19, 5 / 19, 2 / 19, 2 / 19])
    assert out.item_ids[1].tolist() == out.item_ids[0].tolist()


def test_k_larger_than_the_catalogue_is_capped(recommender):
    out = recommender.recommend([["a"], ["nope"]], k=50)
    assert out.item_ids.shape == (2, 5)
    assert sorted(out.item_ids[0].tolist()) == ["a", "b", "c", "d", "e"]
    assert sorted(out.item_ids[1].tolist()) == ["a", "b", "c", "d", "e"]


def test_save_and_load_give_the_same_recommendations(recommender, tmp_path):
    recommender.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec")
    sessions = [["a", "b", "a"], ["e"], ["x"]]
    a, b = recommender.recommend(sessions, k=3), loaded.recommend(sessions, k=3)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_bad_vocabulary_is_rejected():
    model = SRGNN(ModelConfig(num_items=3, hidden_size=4))
    with pytest.raises(ValueError, match="vocabulary has 2 items"):
        Recommender(Scorer(model), Vocabulary(np.array(["a", "b"], dtype=object), np.array([0, 1, 1])))
    with pytest.raises(ValueError, match="unique"):
        Recommender(Scorer(model), Vocabulary(np.array(["a", "a", "b"], dtype=object), np.array([0, 1, 1, 1])))


def test_unique_lists_groups_equal_lists_only():
    from srgnn.serving.predict import unique_lists

    lists = [[5, 6], [5], [5, 6], [6, 5], [7], [5], [5, 6, 5], [5, 6]]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    first, inverse = unique_lists(np.concatenate(lists), offsets)
    assert len(first) == 5  # [5 6], [5], [6 5], [7], [5 6 5]
    for i, members in enumerate(lists):
        assert lists[first[inverse[i]]] == members
    groups = {tuple(lists[f]) for f in first}
    assert groups == {(5, 6), (5,), (6, 5), (7,), (5, 6, 5)}


def test_unique_lists_never_merges_lists_whose_hashes_collide(monkeypatch):
    import srgnn.serving.predict as predict

    # Every hash equal: only the element-by-element check tells the lists apart.
    monkeypatch.setattr(predict, "_mix64", lambda x: np.zeros_like(x))
    lists = [[1, 2], [2, 1], [1, 2], [3, 3], [4]]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    first, inverse = predict.unique_lists(np.concatenate(lists), offsets)
    for i, members in enumerate(lists):
        assert lists[first[inverse[i]]] == members
    with pytest.raises(ValueError, match="non-empty"):
        predict.unique_lists(np.array([1]), np.array([0, 0, 1]))


def test_duplicate_sessions_get_the_rows_of_a_lone_session(recommender):
    sessions = [["a", "b"], ["c"], ["a", "b"], [], ["c"], ["b", "a"]]
    together = recommender.recommend(sessions, k=4)
    for i, session in enumerate(sessions):
        alone = recommender.recommend([session], k=4)
        assert together.item_ids[i].tolist() == alone.item_ids[0].tolist()
        np.testing.assert_allclose(together.scores[i], alone.scores[0], rtol=1e-5, atol=1e-6)


def test_short_session_fallback_routes_its_lengths_and_survives_save_and_load(recommender, tmp_path):
    from srgnn.model.baselines import ItemKNN
    from srgnn.serving.recommender import SOURCE_ITEM_KNN, ShortSessionFallback

    # Co-occurrences: a-c in three sessions, a-e in one; b-d twice.
    knn = ItemKNN(regularization=0.0).fit([[1, 3], [3, 1, 5], [1, 3], [2, 4], [4, 2], [1, 5]], num_items=5)
    routed = recommender.with_short_fallback(ShortSessionFallback(knn, (1,), {"1": "why"}))
    sessions = [["a"], ["zz", "a"], ["b", "a"], [], ["b"]]
    out = routed.recommend(sessions, k=3)
    plain = recommender.recommend(sessions, k=3)
    assert out.source.tolist() == [SOURCE_ITEM_KNN, SOURCE_ITEM_KNN, SOURCE_MODEL, SOURCE_POPULARITY,
                                   SOURCE_ITEM_KNN]
    # the neighbours of a, then item-KNN's most clicked item (a, 4 training clicks)
    assert out.item_ids[0].tolist() == ["c", "e", "a"]
    assert out.item_ids[1].tolist() == ["c", "e", "a"] and out.unknown_clicks.tolist() == [0, 1, 0, 0, 0]
    assert out.item_ids[4].tolist()[0] == "d"
    for row in (2, 3):  # the other sessions are answered as without the fallback
        assert out.item_ids[row].tolist() == plain.item_ids[row].tolist()
        np.testing.assert_allclose(out.scores[row], plain.scores[row], rtol=1e-5, atol=1e-6)

    routed.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.short_fallback.lengths == (1,) and loaded.short_fallback.evidence == {"1": "why"}
    again = loaded.recommend(sessions, k=3)
    assert again.item_ids.tolist() == out.item_ids.tolist() and again.source.tolist() == out.source.tolist()
    np.testing.assert_allclose(again.scores, out.scores, rtol=1e-6)
    assert Recommender.load(_saved(recommender, tmp_path / "plain")).short_fallback is None

    with pytest.raises(ValueError, match="lengths"):
        ShortSessionFallback(knn, (), {})
    with pytest.raises(ValueError, match="cover"):
        recommender.with_short_fallback(ShortSessionFallback(ItemKNN().fit([[1, 2]], num_items=3), (1,), {}))


def _saved(recommender, path):
    recommender.save(path)
    return path
