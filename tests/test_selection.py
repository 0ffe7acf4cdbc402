"""The champion is the best recommender, not the best SR-GNN: candidate selection on validation,
every kind saved and loaded as the same Recommender folder, the blend, and the kind in the
warehouse.

Run folders are written without Spark (:func:`test_registry.write_run_folder`); the first-order
clickstream comes from :mod:`srgnn.data.synth` with most next clicks following the last one.
"""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
import torch

from srgnn.config import Settings, TrainConfig
from srgnn.data.runfolder import RunFolder
from srgnn.data.synth import SynthConfig, generate_events
from srgnn.data.vocab import Vocabulary
from srgnn.evaluation.evaluate import fit_baselines
from srgnn.evaluation.selection import fit_candidate, select_candidate, summary_line
from srgnn.model.baselines import BASELINES, FirstOrderMarkov, make_baseline
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.blend import BlendRanker
from srgnn.serving.predict import Scorer
from srgnn.serving.recommender import BaselineRanker, Recommender

from test_registry import write_run_folder
from test_score import day_clicks  # noqa: F401 - the scoring tests' fixture

NUM_ITEMS = 40


def first_order_splits(sessions: int = 6000, items: int = 500, seed: int = 1):
    """Generated sessions (raw ids) where 90% of next clicks follow the last item in its
    intent's browsing order; 70 / 15 / 15 in time order."""
    config = SynthConfig(sessions=sessions, items=items, intents=5, successor_share=0.9, seed=seed)
    session, _, item, _ = generate_events(config)
    bounds = np.flatnonzero(np.diff(session)) + 1
    lists = [[str(i) for i in s] for s in np.split(item, bounds)]
    a, b = int(0.7 * len(lists)), int(0.85 * len(lists))
    return {"train": lists[:a], "valid": lists[a:b], "test": lists[b:]}


def quick_config(**changes) -> TrainConfig:
    """A one-epoch training on a few hundred examples; registered as trained (no refit)."""
    if "refit" in {f.name for f in fields(TrainConfig)}:
        changes.setdefault("refit", False)
    return TrainConfig(batch_size=100, epochs=1, progress=False, num_threads=1,
                       short_fallback=False, **changes)


def untrained_scorer(num_items: int, seed: int = 0) -> Scorer:
    torch.manual_seed(seed)
    return Scorer(SRGNN(ModelConfig(num_items=num_items, hidden_size=8)), precision="float32")


def fitted(name: str, num_items: int = NUM_ITEMS, seed: int = 0):
    rng = np.random.default_rng(seed)
    sessions = [list(rng.integers(1, num_items + 1, size=rng.integers(2, 7))) for _ in range(300)]
    return make_baseline(name).fit(sessions, num_items=num_items)


def vocabulary(num_items: int = NUM_ITEMS) -> Vocabulary:
    ids = np.array([f"item-{n}" for n in range(1, num_items + 1)], dtype=object)
    return Vocabulary(ids, np.arange(num_items + 1)[::-1].copy())


def prefixes(num_items: int = NUM_ITEMS, count: int = 60, seed: int = 5):
    rng = np.random.default_rng(seed)
    lists = [rng.integers(1, num_items + 1, size=rng.integers(0, 6)) for _ in range(count)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])])
    return np.concatenate(lists).astype(np.int64), offsets


# --------------------------------------------------------------------------------------------
# The blend
# --------------------------------------------------------------------------------------------
def test_blend_weight_one_is_srgnn_and_zero_is_the_baseline():
    scorer, markov = untrained_scorer(NUM_ITEMS), BaselineRanker(fitted("markov"))
    values, offsets = prefixes()
    k = 10
    srgnn_top, markov_top = scorer.top_k(values, offsets, k), markov.top_k(values, offsets, k)
    only_srgnn = BlendRanker(scorer, markov, 1.0, pool=20).top_k(values, offsets, k)
    only_markov = BlendRanker(scorer, markov, 0.0, pool=20).top_k(values, offsets, k)
    empty = np.diff(offsets) == 0
    assert empty.any() and (only_srgnn.empty == empty).all()
    np.testing.assert_array_equal(only_srgnn.items[~empty], srgnn_top.items[~empty])
    np.testing.assert_array_equal(only_markov.items[~empty], markov_top.items[~empty])
    # In between, both lists contribute: items from each that the other does not rank.
    half = BlendRanker(scorer, markov, 0.5, pool=20).top_k(values, offsets, k)
    rows = np.flatnonzero(~empty)
    from_srgnn = sum(len(set(half.items[r]) - set(markov_top.items[r])) for r in rows)
    from_markov = sum(len(set(half.items[r]) - set(srgnn_top.items[r])) for r in rows)
    assert from_srgnn > 0 and from_markov > 0
    for r in rows:  # a list of distinct real items, best first
        assert len(set(half.items[r])) == k and half.items[r].min() >= 1
        assert (np.diff(half.scores[r]) <= 1e-12).all()


def test_blend_rejects_a_weight_outside_zero_one():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BlendRanker(untrained_scorer(NUM_ITEMS), BaselineRanker(fitted("markov")), 1.5)


# --------------------------------------------------------------------------------------------
# Every kind is a Recommender folder
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_saved_baseline_recommender_loads_with_identical_top_k(name, tmp_path):
    recommender = Recommender(BaselineRanker(fitted(name)), vocabulary())
    recommender.save(tmp_path / "rec")
    meta = json.loads((tmp_path / "rec" / "recommender.json").read_text())
    assert meta["kind"] == name and not (tmp_path / "rec" / "model.pt").exists()
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.kind == name and type(loaded.ranker.baseline) is BASELINES[name]
    sessions = [[f"item-{n}" for n in row] for row in ([3, 7, 3], [12], [40, 1, 2, 5], [], ["x"])]
    a, b = recommender.recommend(sessions, k=15), loaded.recommend(sessions, k=15)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.source.tolist() == b.source.tolist()


def test_a_saved_blend_loads_with_identical_recommendations(tmp_path):
    blend = BlendRanker(untrained_scorer(NUM_ITEMS), BaselineRanker(fitted("iknn")), 0.25, pool=30)
    recommender = Recommender(blend, vocabulary())
    assert recommender.kind == "blend:srgnn+iknn"
    recommender.save(tmp_path / "rec")
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.kind == "blend:srgnn+iknn" and loaded.ranker.weight == 0.25
    assert loaded.ranker.pool == 30
    sessions = [["item-3", "item-9"], ["item-20"], ["item-1", "item-2", "item-1"], []]
    a, b = recommender.recommend(sessions, k=10), loaded.recommend(sessions, k=10)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_a_model_folder_is_labelled_with_its_kind_before_and_after_loading(tmp_path):
    from srgnn.serving.models import locate_model, resolve_model

    Recommender(BaselineRanker(fitted("sknn")), vocabulary()).save(tmp_path / "rec")
    settings = Settings(home=tmp_path / "home")
    assert locate_model(settings, str(tmp_path / "rec")).label == "sknn:local"
    recommender, ref = resolve_model(settings, str(tmp_path / "rec"))
    assert ref.label == "sknn:local" and recommender.kind == "sknn"


def test_a_folder_saved_before_kinds_still_loads_as_srgnn(tmp_path):
    recommender = Recommender(untrained_scorer(NUM_ITEMS), vocabulary())
    recommender.save(tmp_path / "rec")
    meta_path = tmp_path / "rec" / "recommender.json"
    meta = json.loads(meta_path.read_text())
    assert meta["kind"] == "srgnn"
    del meta["kind"], meta["ranker"]  # what earlier versions wrote
    meta_path.write_text(json.dumps(meta))
    loaded = Recommender.load(tmp_path / "rec")
    assert loaded.kind == "srgnn"
    sessions = [["item-3", "item-9"], ["item-20"]]
    assert (loaded.recommend(sessions, k=5).item_ids.tolist()
            == recommender.recommend(sessions, k=5).item_ids.tolist())


def test_a_baseline_file_of_another_kind_is_refused(tmp_path):
    fitted("sknn").save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="'sknn' model, not 'markov'"):
        FirstOrderMarkov.load(tmp_path / "model.npz")


# --------------------------------------------------------------------------------------------
# Selection on validation
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first_order_run(tmp_path_factory):
    return RunFolder(write_run_folder(tmp_path_factory.mktemp("first-order") / "run",
                                      first_order_splits()))


def test_an_untrained_srgnn_loses_to_markov_on_a_first_order_stream(first_order_run):
    run = first_order_run
    srgnn = Recommender(untrained_scorer(run.num_items), run.vocabulary)
    chosen = select_candidate(run, srgnn, srgnn, baselines=("markov", "iknn", "pop"))
    assert chosen.kind == "markov" and chosen.blend_weight is None
    names = list(chosen.results)
    assert names[:4] == ["srgnn", "markov", "iknn", "pop"]
    assert names[4:] == [f"blend:srgnn+markov@{w}" for w in ("0.25", "0.5", "0.75")]
    hr = {name: row["HR@20"] for name, row in chosen.results.items()}
    assert hr["markov"] > hr["srgnn"] + 0.3 and hr["markov"] > hr["pop"]
    # what is registered is Markov fitted on the training split
    markov, _ = fit_baselines(run, ["markov"])
    sessions = run.raw_examples("valid")[0].slice(0, 200)
    assert (chosen.recommender.recommend(sessions).item_ids.tolist()
            == markov["markov"].recommend(sessions).item_ids.tolist())
    line = summary_line(chosen)
    assert "\n" not in line and line.endswith("-> markov") and "markov " in line


def test_selection_scores_the_first_max_examples_of_validation_and_says_so(first_order_run):
    from srgnn.evaluation import heldout

    run = first_order_run
    srgnn = Recommender(untrained_scorer(run.num_items), run.vocabulary)
    every = heldout.from_run(run, "valid")
    first = heldout.from_run(run, "valid", max_examples=300)
    assert len(every) == run.count_examples("valid") > 300 and len(first) == 300
    assert first.targets.tolist() == every.targets[:300].tolist()  # the split's order
    assert first.sessions.to_pylist() == every.sessions.slice(0, 300).to_pylist()
    assert "first 300 examples" in first.description
    assert len(heldout.from_run(run, "valid", max_examples=10 ** 9)) == len(every)

    capped = select_candidate(run, srgnn, srgnn, baselines=("markov", "pop"), max_examples=300)
    record = capped.as_dict()
    assert record["examples"] == 300 and record["max_examples"] == 300
    assert {row["examples"] for row in record["candidates"].values()} == {300}
    assert "on 300 examples" in capped.reason
    whole = select_candidate(run, srgnn, srgnn, baselines=("markov", "pop")).as_dict()
    assert whole["examples"] == len(every) and whole["max_examples"] is None
    assert {row["examples"] for row in whole["candidates"].values()} == {len(every)}
    with pytest.raises(ValueError, match="max_examples must be positive"):
        heldout.from_run(run, "valid", max_examples=0)


def test_baseline_and_blend_candidates_are_fitted_by_one_function(first_order_run):
    """fit_candidate builds the selection's winner and the final refit's champion."""
    run = first_order_run
    srgnn = Recommender(untrained_scorer(run.num_items), run.vocabulary)
    fitted, _ = fit_baselines(run, ["markov"])
    # on train alone, the baseline selection fitted is taken as it is
    same, seconds = fit_candidate(run, "markov", ("train",), fitted=fitted)
    assert same is fitted["markov"] and seconds == 0.0
    # on more days it is fitted on them: other scores than train's, Markov's of train + valid
    wider, seconds = fit_candidate(run, "markov", ("train", "valid"), fitted=fitted)
    assert wider is not fitted["markov"] and seconds > 0
    sessions = run.raw_examples("valid")[0].slice(0, 200)
    scores = wider.recommend(sessions, k=5).scores
    assert not np.allclose(scores, fitted["markov"].recommend(sessions, k=5).scores,
                           equal_nan=True)
    markov = make_baseline("markov").fit_flat(
        *concatenated_sessions(run, ("train", "valid")), num_items=run.num_items)
    assert (wider.recommend(sessions, k=5).item_ids.tolist()
            == Recommender(BaselineRanker(markov), run.vocabulary).recommend(sessions, k=5)
            .item_ids.tolist())
    # with SR-GNN: the blend of the two at SR-GNN's share
    blend, _ = fit_candidate(run, "markov", ("train",), srgnn=srgnn, weight=0.25, fitted=fitted)
    assert blend.kind == "blend:srgnn+markov" and blend.ranker.weight == 0.25
    assert blend.ranker.srgnn is srgnn.ranker and blend.ranker.baseline is fitted["markov"].ranker
    assert blend.vocabulary is srgnn.vocabulary
    with pytest.raises(ValueError, match="needs SR-GNN's weight"):
        fit_candidate(run, "markov", srgnn=srgnn, fitted=fitted)


def concatenated_sessions(run, splits):
    values = np.concatenate([run.sessions(split).values for split in splits])
    lengths = np.concatenate([np.diff(run.sessions(split).offsets) for split in splits])
    return values, np.concatenate([[0], np.cumsum(lengths)])


def test_candidates_srgnn_keeps_srgnn_without_evaluating(first_order_run):
    run = first_order_run
    srgnn = Recommender(untrained_scorer(run.num_items), run.vocabulary)
    chosen = select_candidate(run, srgnn, srgnn, mode="srgnn")
    assert chosen.kind == "srgnn" and chosen.recommender is srgnn and chosen.results == {}
    with pytest.raises(ValueError, match="candidates must be one of auto, srgnn"):
        select_candidate(run, srgnn, srgnn, mode="best")
    with pytest.raises(ValueError, match="candidates must be one of"):
        TrainConfig(candidates="everything")


@pytest.mark.slow
@pytest.mark.spark
def test_training_registers_markov_which_loads_through_pyfunc_and_scores(first_order_run, spark,
                                                                         tmp_path):
    import mlflow.pyfunc

    from srgnn.pipeline import evaluate_step, gate_step
    from srgnn.serving import registry
    from srgnn.serving.score import score_day
    from srgnn.training.run import run_training
    from srgnn.warehouse import Warehouse

    from conftest import write_text

    settings = Settings(home=tmp_path / "home", warehouse_url=f"duckdb:///{tmp_path / 'wh.duckdb'}")
    config = quick_config(hidden_size=16, max_examples_per_epoch=500)
    trained = run_training(settings, first_order_run.path, config)
    assert trained["kind"] == "markov"
    figures = trained["selection"]["candidates"]
    assert figures["markov"]["HR@20"] > figures["srgnn"]["HR@20"]
    on_disk = json.loads((first_order_run.path / "selection.json").read_text())
    assert on_disk["kind"] == "markov" and set(on_disk["candidates"]) == set(figures)
    tracking = registry.client()
    version = tracking.get_model_version("srgnn", str(trained["version"]))
    assert version.tags["kind"] == "markov"
    run = tracking.get_run(trained["run_id"]).data
    assert run.tags["kind"] == "markov" and run.params["candidates"] == "auto"
    assert run.metrics["select.markov.valid_hr_at_20"] == pytest.approx(figures["markov"]["HR@20"])
    assert run.metrics["select.srgnn.valid_hr_at_20"] == pytest.approx(figures["srgnn"]["HR@20"])

    model = mlflow.pyfunc.load_model(trained["model_uri"])
    sessions = first_order_run.raw_examples("test")[0].slice(0, 50).to_pylist()
    predicted = model.predict(__import__("pandas").DataFrame({"items": sessions}), params={"k": 5})
    markov, _ = fit_baselines(first_order_run, ["markov"])
    assert predicted["item_ids"].tolist() == markov["markov"].recommend(sessions, k=5).item_ids.tolist()

    evaluated = evaluate_step(str(first_order_run.path), trained, baselines=("markov", "pop"),
                              settings=settings)
    assert evaluated["candidate"]["kind"] == "markov"
    assert evaluated["candidate"]["row"] == "markov (candidate)"
    assert evaluated["results"]["markov (candidate)"]["HR@20"] == pytest.approx(
        evaluated["results"]["markov"]["HR@20"])
    gate = gate_step(trained, evaluated, settings=settings)
    assert gate["promoted"] and gate["champion_version"] == str(trained["version"])

    day = "2024-05-02"
    lines = ["session_id,timestamp,item_id"] + [
        f"s{n},{1714608000 + 60 * t},{item}" for n, session in enumerate(sessions[:20])
        for t, item in enumerate(session)] + ["lost,1714608000,not-an-item"]
    clicks = write_text(tmp_path / "clicks" / "day.csv", "\n".join(lines) + "\n")
    result = score_day(settings, clicks, day, top_k=5, spark=spark)  # the champion
    label = f"markov:{trained['version']}"
    assert result["model_version"] == label
    with Warehouse.connect(settings.warehouse) as warehouse:
        rows = warehouse.run_query("day_recommendations", ds=day).to_dicts()
        runs = warehouse.run_query("scoring_runs", start_ds=day, end_ds=day).to_dicts()
    assert {r["model_version"] for r in rows if r["session_id"] != "lost"} == {label}
    assert {r["model_version"] for r in rows if r["session_id"] == "lost"} == {"fallback:pop"}
    assert {r["model_name"] for r in rows} == {"srgnn"}
    assert runs[0]["status"] == "succeeded" and runs[0]["model_version"] == label


@pytest.mark.slow
def test_a_short_training_with_candidates_srgnn_registers_srgnn(tmp_path):
    from srgnn.serving import registry
    from srgnn.training.run import run_training

    run_dir = write_run_folder(tmp_path / "run", first_order_splits(sessions=800, items=100))
    settings = Settings(home=tmp_path / "home")
    config = quick_config(hidden_size=8, max_examples_per_epoch=200, candidates="srgnn")
    trained = run_training(settings, run_dir, config)
    assert trained["kind"] == "srgnn" and trained["selection"]["candidates"] == {}
    version = registry.client().get_model_version("srgnn", str(trained["version"]))
    assert version.tags["kind"] == "srgnn"
    recommender, _ = registry.load_recommender(trained["model_uri"])
    assert recommender.kind == "srgnn"


@pytest.mark.spark
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_both_engines_write_a_baselines_kind_into_the_warehouse(spark, tmp_path, day_clicks, engine):
    from srgnn.serving.score import score_day

    from test_score import ITEMS, DAY, settings_for, stored

    popularity = np.array([0, 9, 8, 7, 6, 5, 4, 3])
    markov = FirstOrderMarkov().fit([[1, 2, 3], [2, 3, 4], [1, 2, 5], [3, 1]], num_items=len(ITEMS))
    folder = tmp_path / "markov"
    Recommender(BaselineRanker(markov), Vocabulary(np.array(ITEMS, dtype=object), popularity)).save(folder)
    settings = settings_for(tmp_path)
    result = score_day(settings, day_clicks, DAY, model_uri=str(folder), top_k=3, spark=spark,
                       engine=engine)
    assert result["model_version"] == "markov:local" and result["fallbacks"] == 1
    rows = stored(settings.warehouse)
    assert {r[4] for r in rows if r[0] != "only-unknown"} == {"markov:local"}
    assert {r[4] for r in rows if r[0] == "only-unknown"} == {"fallback:pop"}
    # "plain" clicked a, b, a: in training, a (item 1) was followed by b (item 2) only
    assert [r[2] for r in rows if r[0] == "plain"][0] == "b"
