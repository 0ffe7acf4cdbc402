"""Nightly scoring into a real warehouse: idempotent days, both engines, hostile ids."""

import dataclasses
import datetime as dt

import numpy as np
import pytest
import torch

from srgnn.config import Settings
from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import Recommender
from srgnn.serving.score import score_day
from srgnn.warehouse import Warehouse

from conftest import write_text

pytestmark = pytest.mark.spark

HOSTILE_ITEM = "x'); DROP TABLE recommendations;--"
ITEMS = ["a", "b", "c", "d", HOSTILE_ITEM, "é🙂", "g"]
DAY = "2024-05-02"
T = 1714608000  # 2024-05-02 00:00:00 UTC


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(3)
    model = SRGNN(ModelConfig(num_items=len(ITEMS), hidden_size=16))
    popularity = np.array([0, 9, 8, 7, 6, 5, 4, 3])
    path = tmp_path_factory.mktemp("model") / "recommender"
    Recommender(Scorer(model), Vocabulary(np.array(ITEMS, dtype=object), popularity)).save(path)
    return str(path)


@pytest.fixture()
def day_clicks(tmp_path):
    lines = ["session_id,timestamp,item_id",
             f"plain,{T},a", f"plain,{T + 60},b", f"plain,{T + 120},a",
             f"\"s'; DROP TABLE scoring_runs;--\",{T},c", f"\"s'; DROP TABLE scoring_runs;--\",{T + 9},\"{HOSTILE_ITEM}\"",
             f"ünï 🙂,{T},é🙂",
             f"only-unknown,{T},zzz", f"only-unknown,{T + 5},yyy",
             f"partly,{T},zzz", f"partly,{T + 5},g",
             "broken line without fields", f"nosession-bad,notatime,a"]
    return write_text(tmp_path / "clicks" / "day.csv", "\n".join(lines) + "\n")


def stored(url, ds=DAY):
    with Warehouse.connect(url) as warehouse:
        rows = warehouse.run_query("day_recommendations", ds=ds).to_dicts()
    return sorted((r["session_id"], r["rank"], r["item_id"], round(r["score"], 5), r["model_version"]) for r in rows)


def logged_run(url, ds=DAY):
    """The day's only row of ``scoring_runs``."""
    with Warehouse.connect(url) as warehouse:
        [run] = warehouse.run_query("scoring_runs", start_ds=ds, end_ds=ds).to_dicts()
    return run


def settings_for(tmp_path, url=None):
    return Settings(home=tmp_path / "home", warehouse_url=url or f"duckdb:///{tmp_path / 'wh.duckdb'}")


def test_score_local_writes_every_session_and_reruns_identically(spark, tmp_path, model_dir, day_clicks):
    settings = settings_for(tmp_path)
    first = score_day(settings, day_clicks, DAY, model_uri=model_dir, top_k=5, spark=spark)
    assert first["sessions_in"] == 5
    assert first["rows_written"] == 25
    assert first["fallbacks"] == 1
    assert first["unknown_clicks_skipped"] == 3
    assert first["quarantined"] == 2
    rows = stored(settings.warehouse)
    assert len(rows) == 25
    sessions = {r[0] for r in rows}
    assert sessions == {"plain", "s'; DROP TABLE scoring_runs;--", "ünï 🙂", "only-unknown", "partly"}
    fallback = [r for r in rows if r[0] == "only-unknown"]
    assert [r[2] for r in fallback] == ["a", "b", "c", "d", HOSTILE_ITEM]  # training popularity order
    assert {r[4] for r in fallback} == {"fallback:pop"}
    assert {r[4] for r in rows if r[0] != "only-unknown"} == {"srgnn:local"}
    assert HOSTILE_ITEM in {r[2] for r in rows}

    second = score_day(settings, day_clicks, DAY, model_uri=model_dir, top_k=5, spark=spark)
    assert second["rows_replaced"] == 25
    assert stored(settings.warehouse) == rows
    with Warehouse.connect(settings.warehouse) as warehouse:
        runs = warehouse.run_query("scoring_runs", start_ds=DAY, end_ds=DAY).to_dicts()
    assert len(runs) == 2 and all(r["rows_written"] == 25 for r in runs)


def test_spark_engine_gives_the_same_rows_as_local(spark, tmp_path, model_dir, day_clicks):
    local = settings_for(tmp_path / "local")
    distributed = settings_for(tmp_path / "spark")
    score_day(local, day_clicks, DAY, model_uri=model_dir, top_k=4, spark=spark, engine="local")
    result = score_day(distributed, day_clicks, DAY, model_uri=model_dir, top_k=4, spark=spark, engine="spark")
    assert result["rows_written"] == 20 and result["fallbacks"] == 1
    assert stored(distributed.warehouse) == stored(local.warehouse)


def test_score_into_postgres(spark, tmp_path, model_dir, day_clicks, postgres_server):
    url = postgres_server.create_database("score_test")
    settings = settings_for(tmp_path, url)
    first = score_day(settings, day_clicks, DAY, model_uri=model_dir, top_k=3, spark=spark)
    once = stored(url)
    second = score_day(settings, day_clicks, DAY, model_uri=model_dir, top_k=3, spark=spark)
    rows = stored(url)
    assert (first["rows_replaced"], second["rows_replaced"]) == (0, 15)
    assert len(rows) == 15
    assert len({(r[0], r[1]) for r in rows}) == 15
    assert rows == once  # the rerun replaced the day with the same rows


def test_bad_day_argument_is_a_user_error(tmp_path, model_dir, day_clicks):
    from srgnn.data.readers import InputError

    with pytest.raises(InputError, match="YYYY-MM-DD"):
        score_day(settings_for(tmp_path), day_clicks, "02/05/2024", model_uri=model_dir)


def test_held_out_evaluation_agrees_with_the_rows_in_the_warehouse(spark, tmp_path, model_dir, day_clicks):
    from srgnn.evaluation import heldout
    from srgnn.evaluation.evaluate import evaluate
    from srgnn.serving.models import resolve_model

    settings = settings_for(tmp_path)
    score_day(settings, day_clicks, DAY, model_uri=model_dir, top_k=5, spark=spark)
    rows = stored(settings.warehouse)
    third_of_plain = [r[2] for r in rows if r[0] == "plain" and r[1] == 3][0]
    first_of_fallback = [r[2] for r in rows if r[0] == "only-unknown" and r[1] == 1][0]
    targets = write_text(tmp_path / "targets.csv", "\n".join([
        "session_id,item_id",
        f"plain,\"{third_of_plain}\"",          # hit at rank 3
        f"only-unknown,{first_of_fallback}",   # hit at rank 1 (popularity fallback)
        "partly,not-in-catalogue",             # miss
        "never-seen,a",                        # no such session: a miss
    ]) + "\n")
    recommender, model = resolve_model(settings, model_dir)
    held_out = heldout.from_clicks(spark, day_clicks, targets, recommender.vocabulary)
    assert held_out.absent.tolist() == [False, False, False, True]
    results = evaluate(recommender, held_out, k=5)
    assert results["examples"] == 4
    assert results["HR@5"] == pytest.approx(2 / 4)
    assert results["MRR@5"] == pytest.approx((1 / 3 + 1) / 4)
    assert results["fallback_share"] == pytest.approx(2 / 4)  # only-unknown, and never-seen's empty prefix
    assert model.label == "srgnn:local"


def test_short_sessions_routed_to_item_knn_are_marked_in_both_engines(spark, tmp_path, model_dir, day_clicks):
    from srgnn.model.baselines import ItemKNN
    from srgnn.serving.recommender import ShortSessionFallback

    knn = ItemKNN().fit([[1, 2, 3], [3, 6, 7], [5, 3], [1, 2]], num_items=len(ITEMS))
    routed_dir = tmp_path / "routed"
    Recommender.load(model_dir).with_short_fallback(ShortSessionFallback(knn, (1,), {})).save(routed_dir)
    rows = {}
    for engine in ("local", "spark"):
        settings = settings_for(tmp_path / engine)
        result = score_day(settings, day_clicks, DAY, model_uri=str(routed_dir), top_k=3, spark=spark,
                           engine=engine)
        # one known click: "ünï 🙂" and "partly" (its other click is unknown); no known click: pop
        assert result["fallbacks"] == 3
        rows[engine] = stored(settings.warehouse)
        versions = {r[0]: r[4] for r in rows[engine]}
        assert versions == {"plain": "srgnn:local", "s'; DROP TABLE scoring_runs;--": "srgnn:local",
                            "ünï 🙂": "fallback:iknn", "partly": "fallback:iknn", "only-unknown": "fallback:pop"}
        expected, _ = knn.recommend([7], [0, 1], 3)  # "partly": the neighbours of g
        assert [r[2] for r in rows[engine] if r[0] == "partly"] == [ITEMS[i - 1] for i in expected[0]]
    assert rows["local"] == rows["spark"]


def test_what_scoring_reads_and_drops_is_counted_and_logged(spark, tmp_path, model_dir):
    # 10,000 identical rows are one click read 10,000 times: 9,999 duplicates dropped.
    same = write_text(tmp_path / "same" / "day.csv",
                      "session_id,timestamp,item_id\n" + f"bot,{T},a\n" * 10_000)
    settings = settings_for(tmp_path / "same")
    result = score_day(settings, same, DAY, model_uri=model_dir, top_k=3, spark=spark)
    assert {k: result[k] for k in ("clicks_read", "quarantined", "duplicates_dropped",
                                   "unknown_clicks_skipped", "sessions_in", "rows_written")} == {
        "clicks_read": 10_000, "quarantined": 0, "duplicates_dropped": 9_999,
        "unknown_clicks_skipped": 0, "sessions_in": 1, "rows_written": 3}

    # A mix: duplicates in two sessions, unknown items, broken rows.
    lines = ["session_id,timestamp,item_id",
             f"s1,{T},a", f"s1,{T},a", f"s1,{T},a", f"s1,{T + 60},b",   # 2 duplicates
             f"s2,{T},zzz", f"s2,{T},zzz", f"s2,{T + 5},c",              # 1 duplicate, 1 unknown
             f"s3,{T},yyy",                                               # unknown only
             "broken line", "s4,not-a-time,a"]                           # 2 quarantined
    mix = write_text(tmp_path / "mix" / "day.csv", "\n".join(lines) + "\n")
    expected = {"clicks_read": 10, "quarantined": 2, "duplicates_dropped": 3,
                "unknown_clicks_skipped": 2, "sessions_in": 3, "fallbacks": 1,
                "category_fallbacks": 0}  # no category column: s3 gets popularity
    for engine in ("local", "spark"):
        settings = settings_for(tmp_path / engine)
        result = score_day(settings, mix, DAY, model_uri=model_dir, top_k=3, spark=spark,
                           engine=engine)
        assert {k: result[k] for k in expected} == expected, engine
        run = logged_run(settings.warehouse)
        assert {k: run[k] for k in ("clicks_read", "quarantined", "duplicates_dropped",
                                    "unknown_clicks", "sessions_in", "fallbacks",
                                    "category_fallbacks")} == {
            "clicks_read": 10, "quarantined": 2, "duplicates_dropped": 3, "unknown_clicks": 2,
            "sessions_in": 3, "fallbacks": 1, "category_fallbacks": 0}, engine


def test_the_score_command_prints_the_counts(spark, tmp_path, model_dir, day_clicks):
    from click.testing import CliRunner

    from srgnn.cli import cli

    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "home"), "score", "--clicks",
                                      day_clicks, "--ds", DAY, "--model", model_dir,
                                      "--warehouse", f"duckdb:///{tmp_path / 'wh.duckdb'}"],
                                env={"SRGNN_WAREHOUSE_URL": None})
    assert result.exit_code == 0, result.output
    printed = dict(line.split(None, 1) for line in result.stdout.splitlines()[1:10])
    assert {k: printed[k].strip() for k in ("clicks_read", "quarantined", "duplicates_dropped",
                                           "unknown_clicks_skipped", "category_fallbacks")} == {
        "clicks_read": "12", "quarantined": "2", "duplicates_dropped": "0",
        "unknown_clicks_skipped": "3", "category_fallbacks": "0"}


def test_the_local_engine_scores_a_day_batch_by_batch_with_the_same_rows(spark, tmp_path, model_dir,
                                                                          day_clicks, monkeypatch):
    import srgnn.serving.rows as rows_module

    whole = settings_for(tmp_path / "whole")
    expected = score_day(whole, day_clicks, DAY, model_uri=model_dir, top_k=4, spark=spark)
    batches = []
    recommend_table = rows_module.recommend_table

    def recording(recommender, sessions, k, label):
        batches.append(sessions.num_rows)
        return recommend_table(recommender, sessions, k, label)

    monkeypatch.setattr(rows_module, "recommend_table", recording)
    batched = settings_for(tmp_path / "batched")
    result = score_day(batched, day_clicks, DAY, model_uri=model_dir, top_k=4, spark=spark,
                       batch_sessions=2)
    # five sessions, never more than two in memory at a time
    assert sum(batches) == 5 and max(batches) <= 2 and len(batches) >= 3, batches
    counts = ("clicks_read", "quarantined", "duplicates_dropped", "unknown_clicks_skipped",
              "sessions_in", "fallbacks", "rows_written")
    assert {k: result[k] for k in counts} == {k: expected[k] for k in counts}
    assert stored(batched.warehouse) == stored(whole.warehouse) and len(stored(whole.warehouse)) == 20
    # the day's sessions and rows were staged under the home and are gone with the run
    assert not (batched.home / "scoring" / "_staging").exists()

    from srgnn.data.readers import InputError

    with pytest.raises(InputError, match="batch_sessions must be at least 1"):
        score_day(batched, day_clicks, DAY, model_uri=model_dir, batch_sessions=0, spark=spark)
