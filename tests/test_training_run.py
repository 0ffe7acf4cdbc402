"""One tracked training end to end on a small run folder: train (register), evaluate, gate.

Real MLflow on a SQLite store under a temporary home (no mocks). The run folder is written
without Spark by :func:`test_registry.write_run_folder`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from srgnn.config import Settings, TrainConfig
from srgnn.cpu import resolve_precision
from srgnn.data.runfolder import RunFolder
from srgnn.evaluation import gate as gates
from srgnn.pipeline import evaluate_step, gate_step
from srgnn.serving import registry
from srgnn.serving.recommender import Recommender
from srgnn.training.run import run_training
from test_registry import synthetic_splits, write_run_folder

# Without refit: these tests need a quick model; the refit tests below turn it on.
CONFIG = TrainConfig(hidden_size=32, batch_size=50, epochs=2, progress=False, num_threads=1, seed=7,
                     refit=False)
CONFIG = replace(CONFIG, candidates="srgnn")  # SR-GNN's own training and gate, whatever wins
# Short sessions here choose between SR-GNN and item-KNN only; augmentation, the third way, has
# its tests in test_short_sessions.py.
CONFIG = replace(CONFIG, short_augment=0)
BASELINES = ("pop", "markov")


def train_evaluate_gate(settings, run_dir, config, baselines=BASELINES, **options):
    """The training DAG's train -> evaluate -> gate, in this process."""
    trained = run_training(settings, run_dir, config, **options)
    evaluated = evaluate_step(str(run_dir), trained, baselines=baselines, settings=settings)
    return trained, evaluated, gate_step(trained, evaluated, settings=settings)


def examples_of(run_dir, *splits) -> int:
    return sum(RunFolder(run_dir).count_examples(split) for split in splits)


def days_of(run_dir, *splits) -> str:
    """First..last UTC day on which a session of ``splits`` ended, from the session end times."""
    from datetime import datetime, timezone

    ends = [t for split in splits for t in RunFolder(run_dir).sessions(split).end_times]
    first, last = (datetime.fromtimestamp(t, timezone.utc) for t in (min(ends), max(ends)))
    return f"{first:%Y-%m-%d}..{last:%Y-%m-%d}"


def small_run(tmp_path, seed: int, **changes):
    """A small run folder of its own and a quick config for it."""
    run_dir = write_run_folder(tmp_path / "run", synthetic_splits(num_sessions=600, seed=seed))
    return run_dir, replace(CONFIG, hidden_size=16, **changes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two trainings on the same run folder: a good one, then a much worse one."""
    root = tmp_path_factory.mktemp("training")
    settings = Settings(home=root / "home")
    run_dir = write_run_folder(root / "run", synthetic_splits())
    first = train_evaluate_gate(settings, run_dir, CONFIG)
    worse = train_evaluate_gate(settings, run_dir,
                                replace(CONFIG, epochs=1, max_examples_per_epoch=100), baselines=())
    return settings, run_dir, first, worse


@pytest.mark.slow
def test_training_registers_a_version_and_the_evaluation_compares_it(trained):
    _, run_dir, (first, evaluated, gate), _ = trained
    for step in (first, evaluated, gate):
        json.dumps(step)  # JSON-able, for XCom
    assert first["version"] == 1 and first["model_uri"] == "models:/srgnn/1"
    assert not first["reused"] and first["epochs"] == 2 and first["best_epoch"] in (1, 2)
    assert gate["promoted"] and gate["decision"] == gates.DECISION_FIRST
    assert gate["champion_version"] == "1" and evaluated["split"] == "test"
    results = evaluated["results"]
    assert list(results) == ["srgnn", *BASELINES]  # no champion row: there was none
    assert results["srgnn"]["HR@20"] > 0.6  # learnable data: far above popularity
    assert results["srgnn"]["HR@20"] > results["pop"]["HR@20"] + 0.2
    assert 0 < results["srgnn"]["MRR@20"] < results["srgnn"]["HR@20"]
    assert evaluated["examples"] == RunFolder(run_dir).count_examples("test")
    assert "srgnn" in evaluated["table"] and "markov" in evaluated["table"]
    assert (run_dir / "model" / "best_model.pt").is_file()
    for name in ("training.json", "evaluation.json", "evaluation.txt", "gate.json"):
        assert (run_dir / name).is_file(), name


@pytest.mark.slow
def test_the_mlflow_run_holds_config_curves_plots_and_model(trained):
    import mlflow

    _, run_dir, (first, evaluated, _), _ = trained
    tracking = registry.client()
    run = tracking.get_run(first["run_id"])
    params = run.data.params
    for name, value in asdict(CONFIG).items():  # the config object itself, every field
        assert params[name] == str(value), name
    assert params["num_items"] == str(RunFolder(run_dir).num_items)
    assert params["training_precision"] == resolve_precision(CONFIG.precision)  # "auto" resolved
    assert params["prepare.min_item_support"] == "1"
    assert int(params["data.train_examples"]) > 1000

    curve = tracking.get_metric_history(first["run_id"], "valid_hr_at_20")
    assert [m.step for m in curve] == [1, 2]
    for name in ("train_loss", "valid_mrr_at_20", "examples_per_second", "learning_rate"):
        assert len(tracking.get_metric_history(first["run_id"], name)) == 2, name
    # the evaluation step's figures went to the same run
    assert run.data.metrics["test_hr_at_20"] == pytest.approx(evaluated["results"]["srgnn"]["HR@20"])
    assert run.data.metrics["baseline.pop.test_hr_at_20"] == pytest.approx(
        evaluated["results"]["pop"]["HR@20"])

    artifacts = {f.path for f in tracking.list_artifacts(first["run_id"])}
    artifacts |= {f.path for d in ("plots", "data") for f in tracking.list_artifacts(first["run_id"], d)}
    assert {"plots/training_curve.png", "plots/hr_by_length.png", "data/vocab.parquet",
            "config.json", "evaluation.txt", "evaluation.json"} <= artifacts
    config = mlflow.artifacts.load_dict(f"runs:/{first['run_id']}/config.json")
    assert config["train_config"] == asdict(CONFIG) and len(config["history"]) == 2

    version = tracking.get_model_version("srgnn", "1")
    assert version.run_id == first["run_id"]
    assert version.tags["gate.decision"] == "first model"
    assert run.data.tags["gate.decision"] == "first model"


@pytest.mark.slow
def test_a_worse_training_is_registered_but_not_promoted(trained):
    _, _, (first, first_evaluation, _), (worse, evaluated, gate) = trained
    assert worse["version"] == 2
    assert not gate["promoted"] and gate["decision"] == gates.DECISION_KEPT
    assert gate["champion_version"] == "1" and gate["previous_champion_version"] == "1"
    # The evaluation scored the champion (version 1) on the same examples, once.
    assert evaluated["champion"]["version"] == "1"
    assert list(evaluated["results"]) == ["srgnn", "champion"]
    champion_hr = first_evaluation["results"]["srgnn"]["HR@20"]
    assert evaluated["results"]["champion"]["HR@20"] == pytest.approx(champion_hr)
    assert evaluated["results"]["srgnn"]["HR@20"] < champion_hr
    assert registry.champion_version().version in (1, "1")
    tags = registry.client().get_model_version("srgnn", "2").tags
    assert float(tags["gate.champion_hr_at_20"]) == pytest.approx(champion_hr, abs=1e-6)


@pytest.mark.slow
def test_evaluating_the_champion_with_baselines(trained):
    settings, run_dir, (first, first_evaluation, _), (worse, worse_evaluation, _) = trained
    out = evaluate_step(str(run_dir), baselines=BASELINES, settings=settings)
    results = out["results"]
    assert list(results) == ["srgnn", *BASELINES]
    assert out["candidate"]["version"] == "1" and out["champion"] is None
    assert results["srgnn"]["HR@20"] == pytest.approx(first_evaluation["results"]["srgnn"]["HR@20"])
    assert results["srgnn"]["HR@20"] > results["pop"]["HR@20"]
    assert "srgnn version 1" in out["table"] and "by session length" in out["table"]
    other = evaluate_step(str(run_dir), model_uri="models:/srgnn/2", baselines=(), settings=settings)
    assert list(other["results"]) == ["srgnn"]
    assert other["results"]["srgnn"]["HR@20"] == pytest.approx(
        worse_evaluation["results"]["srgnn"]["HR@20"])


@pytest.mark.slow
def test_resume_continues_the_interrupted_mlflow_run(trained, tmp_path):
    settings = trained[0]
    run_dir, config = small_run(tmp_path, seed=4, epochs=1)
    first = run_training(settings, run_dir, config, model_name="srgnn-resume")
    tracking = registry.client()
    # As if the task had died after epoch 1, before its model was registered.
    tracking.set_terminated(first["run_id"], "FAILED")
    tracking.delete_model_version("srgnn-resume", str(first["version"]))

    resumed = run_training(settings, run_dir, replace(config, epochs=2), resume=True,
                           model_name="srgnn-resume")
    assert resumed["run_id"] == first["run_id"] and resumed["epochs"] == 2
    assert not resumed["reused"] and resumed["version"] == first["version"] + 1
    steps = [m.step for m in tracking.get_metric_history(first["run_id"], "train_loss")]
    assert steps == [1, 2]  # epoch 1 came from the checkpoint, not trained or logged again
    run = tracking.get_run(first["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1" and run.data.tags["resume.epochs"] == "2"
    assert registry.champion_version(model_name="srgnn").version in (1, "1")  # other model untouched


@pytest.mark.slow
def test_resume_after_registration_registers_nothing_new(trained, tmp_path):
    """A retried train task (or --resume on a finished run) returns the version it registered."""
    settings = trained[0]
    run_dir, config = small_run(tmp_path, seed=8, epochs=1)
    first = run_training(settings, run_dir, config, model_name="srgnn-retry", resume=True)
    again = run_training(settings, run_dir, config, model_name="srgnn-retry", resume=True)
    assert again["reused"] and not first["reused"]
    assert (again["version"], again["run_id"]) == (first["version"], first["run_id"])
    versions = registry.client().search_model_versions("name='srgnn-retry'")
    assert [str(v.version) for v in versions] == [str(first["version"])]
    # Lost its training.json too (a crash right after registering): still the same version.
    (run_dir / "training.json").unlink()
    third = run_training(settings, run_dir, config, model_name="srgnn-retry", resume=True)
    assert third["reused"] and third["version"] == first["version"]
    # rebuilt from MLflow: what the registered model is and saw
    assert (third["kind"], third["trained_on"], third["trained_days"], third["stop_reason"]) == \
        (first["kind"], first["trained_on"], first["trained_days"], first["stop_reason"])
    assert third["best_epoch"] == first["best_epoch"] >= 1
    assert len(registry.client().search_model_versions("name='srgnn-retry'")) == 1


@pytest.mark.slow
def test_refit_registers_the_model_trained_on_train_and_valid(trained, tmp_path):
    settings = trained[0]
    run_dir, config = small_run(tmp_path, seed=5, epochs=2)
    out = run_training(settings, run_dir, config, model_name="srgnn-refit", refit=True)
    assert out["refit_epochs"] == out["best_epoch"] >= 1
    run = registry.client().get_run(out["run_id"])
    assert run.data.tags["refit"] == "true"
    assert out["trained_on"] == run.data.tags["trained_on"] == "train+valid"
    version_tags = registry.client().get_model_version("srgnn-refit", str(out["version"])).tags
    assert version_tags["trained_on"] == "train+valid"
    assert version_tags["trained_days"] == out["trained_days"] == days_of(run_dir, "train", "valid")
    assert out["trained_days"] != days_of(run_dir, "train", "valid", "test")  # test days are later
    assert run.data.tags["refit_epochs"] == str(out["best_epoch"])
    steps = [m.step for m in registry.client().get_metric_history(out["run_id"], "refit_train_loss")]
    assert steps == list(range(1, out["best_epoch"] + 1))
    assert (run_dir / "model" / "refit" / "checkpoint.pt").is_file()
    # The registered weights are the refit's, not the selection run's best epoch.
    import torch

    refit_weights = torch.load(run_dir / "model" / "refit" / "checkpoint.pt", weights_only=True)
    selected = torch.load(run_dir / "model" / "best_model.pt", weights_only=True)
    recommender, _ = registry.load_recommender(out["model_uri"])
    registered = recommender.ranker.model.embedding.weight.detach()
    assert torch.equal(registered, refit_weights["model"]["embedding.weight"])
    assert not torch.equal(registered, selected["model"]["embedding.weight"])


@pytest.mark.slow
def test_without_test_days_the_gate_judges_the_selection_model_and_the_refit_follows(trained,
                                                                                     tmp_path):
    """Refit (the default) with --test-days 0: valid is the held-out split, so the version the
    gate judges never saw it; once promoted, the champion is the refit on train + valid."""
    from srgnn.pipeline import final_refit_step

    settings = trained[0]
    splits = synthetic_splits(num_sessions=300, seed=6)
    run_dir = write_run_folder(tmp_path / "run", {"train": splits["train"], "valid": splits["valid"]})
    config = replace(CONFIG, hidden_size=16, refit=True, final_refit=False)
    candidate, evaluated, gate = train_evaluate_gate(settings, run_dir, config, baselines=(),
                                                     model_name="srgnn-notest")
    assert candidate["trained_on"] == "train" and candidate["refit_epochs"] == 0
    assert not (run_dir / "model" / "refit").exists()
    assert evaluated["split"] == "valid" and gate["promoted"] and gate["version"] == str(candidate["version"])

    final = final_refit_step(candidate, gate, config, settings=settings)
    assert final["final_refit"]["done"] and final["final_refit"]["trained_on"] == "train+valid"
    assert final["version"] == str(candidate["version"] + 1) != gate["version"]
    holder = registry.champion_version(model_name="srgnn-notest")
    assert str(holder.version) == final["version"]
    assert holder.tags["trained_on"] == "train+valid" and holder.tags["refit_of"] == "1"
    assert holder.tags["gate.split"] == "valid" and holder.tags["gate.candidate_version"] == "1"
    history = torch.load(run_dir / "model" / "final" / "checkpoint.pt", weights_only=True)["history"]
    assert len(history) == candidate["best_epoch"]
    assert {h["train_examples"] for h in history} == {examples_of(run_dir, "train", "valid")}


@pytest.mark.slow
def test_short_sessions_go_to_item_knn_only_where_validation_shows_it_better(trained):
    settings, run_dir, (first, _, _), (worse, _, _) = trained
    for result in (first, worse):
        evidence = result["short_fallback"]["validation_by_length"]
        assert set(evidence) == {"1", "2", "3"}
        expected = [n for n in (1, 2, 3) if evidence[str(n)]["srgnn"]["examples"] >= 100
                    and gates.is_better(evidence[str(n)]["iknn"], evidence[str(n)]["srgnn"])]
        assert result["short_fallback"]["lengths"] == expected
        run = registry.client().get_run(result["run_id"])
        assert run.data.tags["short_fallback"] == result["short_fallback"]["description"]
    # The barely trained model loses to item-KNN on one-click sessions: they are routed.
    assert 1 in worse["short_fallback"]["lengths"]
    assert worse["short_fallback"]["description"].startswith("item-KNN for 1 click")

    registry.connect(settings)
    recommender, _ = registry.load_recommender("models:/srgnn/2")
    assert recommender.short_fallback.lengths == tuple(worse["short_fallback"]["lengths"])
    item_ids = recommender.item_ids
    sessions = [[item_ids[3]], [item_ids[3], "never-seen"], [item_ids[5], item_ids[3]] * 3, []]
    out = recommender.recommend(sessions, k=5)
    assert list(out.source[:2]) == ["fallback:iknn"] * 2  # one known click either way
    assert out.source[2] == "model"  # six clicks: SR-GNN
    assert out.source[3] == "fallback:pop"
    # item-KNN's answer: the neighbours of the last click, fitted on the training sessions.
    knn = recommender.short_fallback.item_knn
    expected_items, _ = knn.recommend([4], [0, 1], 5)
    assert list(out.item_ids[0]) == list(item_ids[expected_items[0] - 1])


def test_short_fallback_lengths_rule():
    from srgnn.training.fallback import short_fallback_lengths

    def bucket(hr, mrr, examples=500):
        return {"HR@20": hr, "MRR@20": mrr, "examples": examples}

    model = {"1": bucket(0.30, 0.10), "2": bucket(0.40, 0.15), "3": bucket(0.50, 0.20, examples=99)}
    knn = {"1": bucket(0.35, 0.08), "2": bucket(0.40, 0.16), "3": bucket(0.90, 0.50, examples=99)}
    assert short_fallback_lengths(model, knn) == (1, 2)  # HR first, MRR breaks the tie of 2
    assert short_fallback_lengths(model, model) == ()  # equal is not better
    assert short_fallback_lengths(model, knn, min_examples=50) == (1, 2, 3)
    assert short_fallback_lengths(model, knn, lengths=(2,)) == (2,)
    assert short_fallback_lengths({}, knn) == ()


@pytest.mark.slow
def test_the_champion_is_refitted_on_every_day_after_the_gate_decided_on_test(trained, tmp_path):
    from srgnn.pipeline import final_refit_step

    settings = trained[0]
    run_dir, config = small_run(tmp_path, seed=9, refit=True)  # final_refit: the default, on
    candidate, evaluated, gate = train_evaluate_gate(settings, run_dir, config, baselines=(),
                                                     model_name="srgnn-final")
    # The gate decided on the refit on train + valid, judged on the test days it never saw.
    assert candidate["trained_on"] == "train+valid" and evaluated["split"] == "test"
    assert gate["promoted"] and gate["version"] == str(candidate["version"])

    # The final refit trains with the candidate's settings, whatever the caller's say.
    final = final_refit_step(candidate, gate, replace(config, hidden_size=24), settings=settings)
    tracking = registry.client()
    assert final["final_refit"]["done"] and final["promoted"]
    version = tracking.get_model_version("srgnn-final", final["version"])
    assert str(registry.champion_version(model_name="srgnn-final").version) == final["version"]
    every = days_of(run_dir, "train", "valid", "test")
    assert version.tags["trained_on"] == "train+valid+test" and version.tags["trained_days"] == every
    assert version.tags["refit_of"] == gate["version"]
    assert version.tags["gate.candidate_hr_at_20"] == tracking.get_model_version(
        "srgnn-final", gate["version"]).tags["gate.candidate_hr_at_20"]
    run = tracking.get_run(final["run_id"])
    assert run.data.tags["trained_on"] == "train+valid+test" and run.data.params["refit"] == "True"
    steps = [m.step for m in tracking.get_metric_history(final["run_id"], "refit_train_loss")]
    assert steps == list(range(1, candidate["best_epoch"] + 1))
    history = torch.load(run_dir / "model" / "final" / "checkpoint.pt", weights_only=True)["history"]
    assert {h["train_examples"] for h in history} == {examples_of(run_dir, "train", "valid", "test")}
    # The registered weights are the final refit's.
    recommender, _ = registry.load_recommender(final["model_uri"])
    weights = torch.load(run_dir / "model" / "final" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(recommender.ranker.model.embedding.weight.detach(), weights["embedding.weight"])
    assert weights["embedding.weight"].shape[1] == config.hidden_size == 16

    # A retried task registers nothing new.
    again = final_refit_step(candidate, gate, config, settings=settings)
    assert again["version"] == final["version"]
    assert len(tracking.search_model_versions("name='srgnn-final'")) == 2


def test_no_final_refit_for_a_candidate_the_gate_kept(trained):
    from srgnn.pipeline import final_refit_step

    settings, _, _, (worse, _, gate) = trained
    out = final_refit_step(worse, gate, replace(CONFIG, refit=True), settings=settings)
    assert out["final_refit"] == {"done": False, "reason": "the candidate was not promoted"}
    assert out["version"] == gate["version"] and not out["promoted"]


def test_which_splits_the_final_refit_trains_on(tmp_path):
    from srgnn.training.final import final_splits

    splits = synthetic_splits(num_sessions=200, seed=3)
    full = RunFolder(write_run_folder(tmp_path / "full", splits))
    no_test = RunFolder(write_run_folder(tmp_path / "no_test", {"train": splits["train"],
                                                                "valid": splits["valid"]}))
    on, off = TrainConfig(), TrainConfig(final_refit=False)
    assert final_splits(full, {"trained_on": "train+valid"}, on) == (("train", "valid", "test"), "")
    assert final_splits(full, {"trained_on": "train+valid"}, off) == ((), "final_refit is off")
    assert final_splits(no_test, {"trained_on": "train"}, off) == (("train", "valid"), "")
    assert final_splits(full, {"trained_on": "train+valid+test"}, on)[0] == ()
    assert final_splits(full, {}, TrainConfig(refit=False)) == ((), "refit is off")
    every = ("train", "valid", "test")
    for kind in ("markov", "pop", "blend:srgnn+sknn"):  # baselines and blends are refitted too
        assert final_splits(full, {"kind": kind, "trained_on": "train+valid"}, on) == (every, "")
    assert final_splits(full, {"kind": "blend:srgnn+nothing"}, on) == (
        (), "the candidate is blend:srgnn+nothing, which the final refit cannot fit")


def with_test_only_transition(splits: dict) -> tuple[dict, str, str]:
    """``splits`` with sessions ``[a, b]`` added to test, where ``a`` is a training item, ``b``
    the least clicked training item that never follows ``a`` in train or valid (so no
    popularity filler either), and the copies outnumber every other next item of ``a``: a
    transition that only the test days hold, ``a``'s most frequent once they are seen."""
    from collections import Counter

    pairs = Counter(pair for split in ("train", "valid", "test") for session in splits[split]
                    for pair in zip(session, session[1:]))
    seen = {pair for split in ("train", "valid") for session in splits[split]
            for pair in zip(session, session[1:])}
    clicks = Counter(item for session in splits["train"] for item in session)
    a = max(clicks, key=lambda item: (sum(n for (x, _), n in pairs.items() if x == item), item))
    b = min((item for item in clicks if item != a and (a, item) not in seen),
            key=lambda item: (clicks[item], item))
    copies = 1 + max(n for (x, _), n in pairs.items() if x == a)
    return {**splits, "test": splits["test"] + [[a, b]] * copies}, a, b


@pytest.mark.slow
def test_a_promoted_markov_candidate_is_refitted_on_every_day(trained, tmp_path):
    """A first-order stream where Markov beats a barely trained SR-GNN on validation: the
    champion after the final refit is Markov fitted on train + valid + test."""
    from srgnn.pipeline import final_refit_step
    from test_selection import first_order_splits

    settings = trained[0]
    splits, a, b = with_test_only_transition(first_order_splits(sessions=3000, items=300))
    run_dir = write_run_folder(tmp_path / "run", splits)
    config = replace(CONFIG, hidden_size=8, epochs=1, max_examples_per_epoch=200, refit=True,
                     candidates="auto", max_valid_examples=250)
    candidate, evaluated, gate = train_evaluate_gate(settings, run_dir, config, baselines=(),
                                                     model_name="srgnn-markov")
    assert candidate["kind"] == "markov" and candidate["trained_on"] == "train+valid"
    # Selection scored the validation examples the training validated on: the first 250.
    assert candidate["selection"]["examples"] == 250 < examples_of(run_dir, "valid")
    assert candidate["selection"]["max_examples"] == 250
    assert {row["examples"] for row in candidate["selection"]["candidates"].values()} == {250}
    assert gate["promoted"] and evaluated["split"] == "test"
    before, _ = registry.load_recommender(candidate["model_uri"])
    assert b not in before.recommend([[a]], k=5).item_ids[0].tolist()  # never saw a -> b

    final = final_refit_step(candidate, gate, config, settings=settings)
    assert final["final_refit"]["done"] and final["final_refit"]["kind"] == "markov"
    assert final["final_refit"]["epochs"] == 0 and final["version"] != gate["version"]
    tracking = registry.client()
    holder = registry.champion_version(model_name="srgnn-markov")
    assert str(holder.version) == final["version"]
    assert holder.tags["kind"] == "markov" and holder.tags["refit_of"] == gate["version"]
    assert holder.tags["trained_on"] == "train+valid+test"
    assert holder.tags["trained_days"] == days_of(run_dir, "train", "valid", "test")
    assert holder.tags["gate.candidate_version"] == gate["version"]
    run = tracking.get_run(final["run_id"]).data
    assert run.tags["kind"] == "markov" and run.tags["final_refit"] == "true"
    assert "epochs" not in run.params and run.params["num_items"] == str(RunFolder(run_dir).num_items)
    assert not list((run_dir / "model" / "final").glob("*.pt"))  # nothing trained
    after, _ = registry.load_recommender(final["model_uri"])
    assert after.kind == "markov"
    assert after.recommend([[a]], k=1).item_ids[0].tolist() == [b]  # the test days' transition

    again = final_refit_step(candidate, gate, config, settings=settings)
    assert again["version"] == final["version"]
    assert len(tracking.search_model_versions("name='srgnn-markov'")) == 2
    # An attempt that registered but failed before writing final_refit.json: still no new one.
    (run_dir / "final_refit.json").unlink()
    third = final_refit_step(candidate, gate, config, settings=settings)
    assert third["version"] == final["version"] and third["run_id"] == final["run_id"]
    assert len(tracking.search_model_versions("name='srgnn-markov'")) == 2


@pytest.mark.slow
def test_a_promoted_blend_is_refitted_on_every_day_with_its_weight(trained, tmp_path):
    """The candidate's selection record says a blend of SR-GNN and Markov won at weight 0.25
    (which kind wins is validation's choice, tested in test_selection): the final refit trains
    SR-GNN and fits Markov on every day and blends them at that weight."""
    from srgnn.pipeline import final_refit_step

    settings = trained[0]
    splits, a, b = with_test_only_transition(synthetic_splits(num_sessions=600, seed=11))
    run_dir = write_run_folder(tmp_path / "run", splits)
    config = replace(CONFIG, hidden_size=16, refit=True)
    candidate, _, gate = train_evaluate_gate(settings, run_dir, config, baselines=(),
                                             model_name="srgnn-blend")
    assert gate["promoted"]
    tracking = registry.client()
    kind = "blend:srgnn+markov"
    tracking.set_tag(candidate["run_id"], "select.blend_weight", "0.25")
    tracking.set_model_version_tag("srgnn-blend", str(candidate["version"]), "kind", kind)
    declared = {key: value for key, value in candidate.items() if key not in ("kind", "selection")}

    final = final_refit_step(declared, gate, config, settings=settings)
    assert final["final_refit"]["done"] and final["final_refit"]["blend_weight"] == 0.25
    assert final["final_refit"]["kind"] == kind
    assert final["final_refit"]["epochs"] == candidate["best_epoch"] >= 1
    holder = registry.champion_version(model_name="srgnn-blend")
    assert str(holder.version) == final["version"]
    assert holder.tags["kind"] == kind and holder.tags["trained_on"] == "train+valid+test"
    assert tracking.get_run(final["run_id"]).data.tags["select.blend_weight"] == "0.25"
    recommender, _ = registry.load_recommender(final["model_uri"])
    assert recommender.kind == kind and recommender.ranker.weight == 0.25
    weights = torch.load(run_dir / "model" / "final" / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(recommender.ranker.srgnn.model.embedding.weight.detach(),
                       weights["embedding.weight"])
    history = torch.load(run_dir / "model" / "final" / "checkpoint.pt", weights_only=True)["history"]
    assert {h["train_examples"] for h in history} == {examples_of(run_dir, "train", "valid", "test")}
    markov = Recommender(recommender.ranker.baseline, recommender.vocabulary)
    assert markov.recommend([[a]], k=1).item_ids[0].tolist() == [b]  # fitted on the test days
