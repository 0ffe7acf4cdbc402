"""Cold-start items: a session whose last click is on an item the model does not know, of a
category it does, gets that category's most clicked training items first."""

import numpy as np
import pytest
import torch

from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import (SOURCE_CATEGORY, SOURCE_MODEL, SOURCE_POPULARITY,
                                       ItemCategories, Recommender)

IDS = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
CLICKS = np.array([0, 5, 1, 7, 9, 2, 3])  # training clicks of a..f
# shoes: a (5), c (7), e (2); bags: b (1), d (9); f has no category
CATEGORIES = np.array([None, "shoes", "bags", "shoes", "bags", "shoes", None], dtype=object)


@pytest.fixture()
def recommender():
    torch.manual_seed(0)
    plain = Recommender(Scorer(SRGNN(ModelConfig(num_items=6, hidden_size=8))), Vocabulary(IDS, CLICKS))
    return plain, plain.with_categories(ItemCategories(CATEGORIES, CLICKS))


def test_an_unknown_last_click_of_a_known_category_gets_its_popular_items_first(recommender, tmp_path):
    plain, with_categories = recommender
    sessions = [["a", "new-shoe"], ["new-bag"], ["new-hat"], ["new-shoe", "d"], [], ["x", "y"]]
    last = ["shoes", "bags", "hats", "bags", None, None]
    out = with_categories.recommend(sessions, k=4, last_categories=last)
    usual = plain.recommend(sessions, k=4)
    assert out.source.tolist() == [SOURCE_CATEGORY, SOURCE_CATEGORY, SOURCE_POPULARITY, SOURCE_MODEL,
                                   SOURCE_POPULARITY, SOURCE_POPULARITY]
    assert out.item_ids[0, :3].tolist() == ["c", "a", "e"]  # shoes by training clicks 7, 5, 2
    first_other = [i for i in usual.item_ids[0] if i not in ("a", "c", "e")][0]
    assert out.item_ids[0, 3] == first_other  # the model's answer fills the rest
    np.testing.assert_allclose(out.scores[0, :3], np.array([7, 5, 2]) / 27)
    assert out.item_ids[1, :2].tolist() == ["d", "b"]  # bags: 9, 1
    assert out.item_ids[1, 2:].tolist() == ["c", "a"]  # then popularity without d and b
    for row in (2, 3, 4, 5):  # unknown category, known last click, no session, no category
        assert out.item_ids[row].tolist() == usual.item_ids[row].tolist()
    assert out.fallbacks == 5 and (out.source == SOURCE_CATEGORY).sum() == 2

    # Without categories (a file without the column, or a model trained without it): as before.
    assert plain.recommend(sessions, k=4, last_categories=last).item_ids.tolist() == usual.item_ids.tolist()
    assert with_categories.recommend(sessions, k=4).source.tolist() == usual.source.tolist()

    with_categories.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.categories is not None and len(loaded.categories) == 2
    again = loaded.recommend(sessions, k=4, last_categories=last)
    assert again.item_ids.tolist() == out.item_ids.tolist()
    assert again.source.tolist() == out.source.tolist()
    plain.save(tmp_path / "plain")
    assert Recommender.load(tmp_path / "plain").categories is None


def test_category_input_that_does_not_fit_is_refused(recommender):
    plain, with_categories = recommender
    with pytest.raises(ValueError, match="cover"):
        plain.with_categories(ItemCategories(CATEGORIES[:4], CLICKS[:4]))
    with pytest.raises(ValueError, match="2 entries for 3 sessions"):
        with_categories.recommend([["z"], ["a"], []], k=2, last_categories=["shoes", None])


def test_run_folders_and_saved_recommenders_share_one_category_reader(recommender, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from srgnn.data.runfolder import RunFolder

    plain, with_categories = recommender
    folder = tmp_path / "rec"
    with_categories.save(folder)  # vocab.parquet and item_categories.parquet, as prepare writes
    read = RunFolder(folder).item_categories()
    assert read.tolist() == CATEGORIES.tolist()
    # the per-index array of a run folder, given to the one method, answers as ItemCategories
    sessions, last = [["a", "new-shoe"], ["new-bag"], ["b"]], ["shoes", "bags", "bags"]
    from_array = plain.with_categories(read).recommend(sessions, k=4, last_categories=last)
    expected = with_categories.recommend(sessions, k=4, last_categories=last)
    assert from_array.item_ids.tolist() == expected.item_ids.tolist()
    assert from_array.source.tolist() == [SOURCE_CATEGORY, SOURCE_CATEGORY, SOURCE_MODEL]
    assert with_categories.with_categories(None).categories is None

    def write(index, names):
        pq.write_table(pa.table({"item_index": pa.array(index, pa.int32()),
                                 "category": pa.array(names, pa.string())}),
                       folder / "item_categories.parquet")

    write([2, 7], ["bags", "hats"])  # the vocabulary has items 1..6
    for read_again in (lambda: RunFolder(folder).item_categories(),
                       lambda: Recommender.load(folder)):
        with pytest.raises(ValueError, match="item indices outside the vocabulary"):
            read_again()
    write([], [])
    assert RunFolder(folder).item_categories() is None
    assert Recommender.load(folder).categories is None


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_scoring_a_day_with_a_category_column_serves_and_counts_cold_start_sessions(
        spark, tmp_path, recommender, engine):
    from conftest import write_text
    from srgnn.serving.score import score_day
    from test_score import DAY, T, logged_run, settings_for, stored

    plain, with_categories = recommender
    with_categories.save(tmp_path / "rec")
    lines = ["session_id,timestamp,item_id,category",
             f"cold,{T},a,shoes", f"cold,{T + 60},new-shoe,shoes",  # last click new, shoes known
             f"warm,{T},new-shoe,shoes", f"warm,{T + 60},d,bags",  # last click known: the model
             f"hat,{T},new-hat,hats",  # a category training never saw: popularity
             f"bare,{T},new-bag,"]  # no category on the click
    day = write_text(tmp_path / "day" / "day.csv", "\n".join(lines) + "\n")
    settings = settings_for(tmp_path / engine)
    result = score_day(settings, day, DAY, model_uri=str(tmp_path / "rec"), top_k=4, spark=spark,
                       engine=engine)
    assert result["category_fallbacks"] == 1 and result["fallbacks"] == 3
    run = logged_run(settings.warehouse)
    # only "cold" ends on an unknown item of a known category; "hat" and "bare" get popularity
    assert (run["category_fallbacks"], run["fallbacks"]) == (1, 3)
    rows = stored(settings.warehouse)
    versions = {r[0]: r[4] for r in rows}
    assert versions == {"cold": "fallback:category", "warm": "srgnn:local", "hat": "fallback:pop",
                        "bare": "fallback:pop"}
    assert [r[2] for r in rows if r[0] == "cold"][:3] == ["c", "a", "e"]

    # The same day without the column: as before (popularity for the unknown last clicks).
    without = write_text(tmp_path / "plain" / "day.csv", "\n".join(
        [lines[0].rsplit(",", 1)[0]] + [line.rsplit(",", 1)[0] for line in lines[1:]]) + "\n")
    settings = settings_for(tmp_path / f"{engine}-plain")
    result = score_day(settings, without, DAY, model_uri=str(tmp_path / "rec"), top_k=4, spark=spark,
                       engine=engine)
    assert result["category_fallbacks"] == 0
    assert logged_run(settings.warehouse)["category_fallbacks"] == 0
    assert {r[0]: r[4] for r in stored(settings.warehouse)}["cold"] == "srgnn:local"


@pytest.mark.spark
def test_prepare_keeps_the_category_each_vocabulary_item_was_clicked_with_most(spark, tmp_path):
    from conftest import write_text
    from srgnn.config import PrepareConfig
    from srgnn.data.prepare import run_prepare
    from srgnn.data.runfolder import RunFolder

    day = 86_400
    start = 1_700_000_000
    # (session, day, [(item, category), ...]); b is "bags" twice and "shoes" once.
    sessions = [("s1", 0, [("a", "shoes"), ("b", "bags")]), ("s2", 0, [("b", "bags"), ("c", "")]),
                ("s3", 1, [("a", "shoes"), ("b", "shoes"), ("c", "")]), ("s4", 1, [("b", "bags"), ("a", "shoes")]),
                ("s5", 2, [("a", "shoes"), ("c", "")])]
    lines = ["session_id,timestamp,item_id,category"]
    for sid, d, clicks in sessions:
        lines += [f"{sid},{start + d * day + 60 * k},{item},{category}" for k, (item, category) in enumerate(clicks)]
    with_column = write_text(tmp_path / "with" / "clicks.csv", "\n".join(lines) + "\n")
    config = PrepareConfig(min_item_support=1, test_days=1, valid_days=0)
    run = RunFolder(run_prepare(spark, with_column, str(tmp_path / "run"), config).out_dir)
    categories = run.item_categories()
    by_item = dict(zip(run.vocabulary.item_ids, categories[1:]))
    assert by_item == {"a": "shoes", "b": "bags", "c": None}

    without = write_text(tmp_path / "without" / "clicks.csv", "\n".join(
        line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert RunFolder(run_prepare(spark, without, str(tmp_path / "run2"), config).out_dir).item_categories() is None
