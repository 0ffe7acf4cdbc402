"""MLflow registry: pyfunc round trip, loading by alias, and the promotion gate.

Real MLflow on a SQLite store under ``tmp_path`` (no mocks). Run folders are written without
Spark in the layout of docs/contracts.md (:func:`write_run_folder`), from sessions whose raw
item ids differ from the model indices, so that every path through raw ids is exercised.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from srgnn.data.samples import clustered_sessions, graph_table

NUM_ITEMS = 150


# --------------------------------------------------------------------------------------------
# A prepare run folder without Spark
# --------------------------------------------------------------------------------------------
def raw_id(index: int) -> str:
    """Generator item ``index`` -> a raw id that is not its model index."""
    return f"sku-{index * 37 + 1000}"


def synthetic_splits(num_sessions: int = 1500, seed: int = 3, num_items: int = NUM_ITEMS):
    """Clustered sessions in raw ids, 70 / 15 / 15 in time order (train / valid / test)."""
    sessions = clustered_sessions(num_items=num_items, num_sessions=num_sessions, cluster_size=10,
                                  seed=seed)
    sessions = [[raw_id(i) for i in s] for s in sessions]
    a, b = int(0.7 * len(sessions)), int(0.85 * len(sessions))
    return {"train": sessions[:a], "valid": sessions[a:b], "test": sessions[b:]}


def write_run_folder(root: Path, splits: dict[str, list[list[str]]], *,
                     reverse_vocab: bool = False) -> Path:
    """A run folder as ``srgnn prepare`` writes it: vocab.parquet, sessions/, graphs/, summary.

    The vocabulary is built from the train split, indices by decreasing popularity (ties by
    raw id) as prepare does, or in the reverse order with ``reverse_vocab`` (another
    vocabulary for the same items). Unknown items leave valid/test sessions; sessions shorter
    than 2 are dropped.
    """
    root.mkdir(parents=True, exist_ok=True)
    clicks = Counter(item for session in splits["train"] for item in session)
    ordered = sorted(clicks, key=lambda item: (-clicks[item], item))
    if reverse_vocab:
        ordered = ordered[::-1]
    index = {item: n + 1 for n, item in enumerate(ordered)}
    pq.write_table(pa.table({
        "item_id": pa.array(ordered, pa.string()),
        "item_index": pa.array(np.arange(1, len(ordered) + 1), pa.int32()),
        "train_clicks": pa.array([clicks[item] for item in ordered], pa.int64()),
    }), root / "vocab.parquet")

    counts = {}
    clock = 1_700_000_000
    for split in ("train", "valid", "test"):
        kept, ids = [], []
        for n, session in enumerate(splits.get(split, [])):
            items = [index[item] for item in session if item in index]
            if len(items) >= 2:
                kept.append(items)
                ids.append(f"{split}-{n}")
        starts = clock + 600 * np.arange(len(kept))
        clock += 600 * len(kept) + 86_400
        ends = starts + 60 * np.array([len(s) - 1 for s in kept], dtype=np.int64)
        (root / "sessions" / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "session_id": pa.array(ids, pa.string()),
            "items": pa.array(kept, pa.list_(pa.int32())),
            "start_ts": pa.array(starts.astype("datetime64[s]"), pa.timestamp("us")),
            "end_ts": pa.array(ends.astype("datetime64[s]"), pa.timestamp("us")),
        }), root / "sessions" / split / "part-00000.parquet")
        (root / "graphs" / split).mkdir(parents=True, exist_ok=True)
        table = graph_table(kept, session_ids=ids) if kept else _empty_graph_table()
        pq.write_table(table, root / "graphs" / split / "part-00000.parquet")
        counts[split] = {"sessions": len(kept), "clicks": sum(map(len, kept)),
                         "examples": sum(len(s) - 1 for s in kept)}
    summary = {
        "input": "synthetic",
        "format": "generic",
        "config": {"min_item_support": 1, "min_session_length": 2, "test_days": 1, "valid_days": 1},
        "clicks_kept": sum(c["clicks"] for c in counts.values()),
        "vocab_size": len(ordered),
        "splits": counts,
        "examples": sum(c["examples"] for c in counts.values()),
        "out_dir": str(root),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    return root


def _empty_graph_table() -> pa.Table:
    ints = pa.list_(pa.int32())
    return pa.table({
        "session_id": pa.array([], pa.string()), "prefix": pa.array([], ints),
        "nodes": pa.array([], ints), "alias": pa.array([], ints),
        "edge_src": pa.array([], ints), "edge_dst": pa.array([], ints),
        "target": pa.array([], pa.int32()), "prefix_length": pa.array([], pa.int32()),
    })


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
from srgnn.serving import pyfunc, registry  # noqa: E402
from srgnn.serving import pyfunc as pyfunc_module  # noqa: E402  (after the fixture helpers, which need no MLflow)
from srgnn.config import Settings, TrainConfig  # noqa: E402
from srgnn.data.runfolder import RunFolder  # noqa: E402
from srgnn.evaluation import gate as gates  # noqa: E402
from srgnn.evaluation import heldout  # noqa: E402
from srgnn.evaluation.evaluate import evaluate  # noqa: E402
from srgnn.model.network import SRGNN, ModelConfig  # noqa: E402
from srgnn.serving.predict import Scorer  # noqa: E402
from srgnn.serving.recommender import Recommender  # noqa: E402
from srgnn.training.loop import train  # noqa: E402

TINY = TrainConfig(hidden_size=16, batch_size=50, epochs=1, progress=False, num_threads=1, seed=7)


def train_recommender(run_dir: Path, config: TrainConfig) -> Recommender:
    run = RunFolder(run_dir)
    result = train(run.graphs("train"), run.graphs("valid"), run.num_items, config)
    return Recommender.from_training(result.best_state_dict, result.model_config, run.vocabulary)


def random_recommender(run_dir: Path, seed: int = 0, hidden_size: int = 16) -> Recommender:
    """A model with untrained (random) weights over the run's vocabulary: a damaged model."""
    vocabulary = RunFolder(run_dir).vocabulary
    torch.manual_seed(seed)
    model = SRGNN(ModelConfig(num_items=vocabulary.num_items, hidden_size=hidden_size))
    return Recommender(Scorer(model), vocabulary)


def evaluate_on(recommender: Recommender, run_dir: Path, split: str | None = None) -> dict:
    return evaluate(recommender, heldout.from_run(run_dir, split))


def log_and_gate(recommender: Recommender, run_dir: Path):
    import mlflow

    example = RunFolder(run_dir).raw_examples("test")[0].slice(0, 4).to_pylist()
    with mlflow.start_run():
        info = pyfunc.log_recommender(recommender, example)
    version = info.registered_model_version
    held_out = heldout.from_run(run_dir)

    def evaluate_version(number: str) -> dict:  # the champion, loaded from the registry
        return evaluate(registry.load_recommender(f"models:/srgnn/{number}")[0], held_out)

    return version, gates.promote_if_better(version, evaluate(recommender, held_out),
                                            split="test", evaluate_version=evaluate_version)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same sessions prepared twice, with two different vocabularies."""
    root = tmp_path_factory.mktemp("runs")
    splits = synthetic_splits()
    return (write_run_folder(root / "run1", splits),
            write_run_folder(root / "run2", splits, reverse_vocab=True))


# --------------------------------------------------------------------------------------------
# Fast: evaluation through raw ids, comparison rule, split choice
# --------------------------------------------------------------------------------------------
def test_is_better_compares_hit_rate_then_mrr():
    champion = {"HR@20": 0.5, "MRR@20": 0.2}
    assert gates.is_better({"HR@20": 0.51, "MRR@20": 0.1}, champion)
    assert gates.is_better({"HR@20": 0.5, "MRR@20": 0.21}, champion)
    assert not gates.is_better({"HR@20": 0.5, "MRR@20": 0.2}, champion)  # a tie keeps the champion
    assert not gates.is_better({"HR@20": 0.49, "MRR@20": 0.9}, champion)
    assert not gates.is_better({"HR@20": math.nan, "MRR@20": math.nan}, champion)


def test_evaluation_through_raw_ids_equals_evaluation_on_indices(runs):
    from srgnn.evaluation.evaluate import evaluate_ranked

    run1, run2 = runs
    recommender = random_recommender(run1, seed=3)
    through_raw = evaluate_on(recommender, run1, "test")

    examples = RunFolder(run1).examples("test")
    top = recommender.ranker.top_k(examples.prefix_values, examples.prefix_offsets, 20)
    on_indices = evaluate_ranked(top.items, examples.targets, examples.prefix_lengths,
                                 RunFolder(run1).vocabulary.popularity)
    assert through_raw["examples"] == on_indices["examples"] > 500
    for key in ("HR@20", "MRR@20", "NDCG@20", "coverage@20", "popularity_bias@20"):
        assert through_raw[key] == pytest.approx(on_indices[key], abs=1e-12), key
    for label, bucket in on_indices["by_length"].items():
        assert through_raw["by_length"][label] == pytest.approx(bucket, nan_ok=True), label
    assert through_raw["fallback_share"] == 0.0

    # The same examples prepared with another vocabulary: the same figures.
    other_vocab = evaluate_on(recommender, run2, "test")
    assert other_vocab["HR@20"] == through_raw["HR@20"]
    assert other_vocab["MRR@20"] == through_raw["MRR@20"]


def test_prefixes_unknown_to_the_model_get_its_fallback(runs, tmp_path):
    run1, _ = runs
    splits = synthetic_splits()
    # A model that knows only the first half of the catalogue.
    half = {raw_id(i) for i in range(1, NUM_ITEMS // 2 + 1)}
    small = write_run_folder(tmp_path / "small",
                             {"train": [[i for i in s if i in half] for s in splits["train"]],
                              "valid": [], "test": []})
    result = evaluate_on(random_recommender(small), run1, "test")
    assert 0.2 < result["fallback_share"] < 0.8
    assert result["examples"] == evaluate_on(random_recommender(run1), run1)["examples"]


def test_gate_split_falls_back_to_valid_when_test_is_empty(runs, tmp_path):
    run1, _ = runs
    assert RunFolder(run1).held_out_split() == "test"
    splits = synthetic_splits(num_sessions=200)
    splits["test"] = []
    assert RunFolder(write_run_folder(tmp_path / "no-test", splits)).held_out_split() == "valid"


def test_importing_has_no_side_effects(tmp_path):
    workdir, home = tmp_path / "cwd", tmp_path / "home"
    workdir.mkdir()
    code = ("import mlflow, srgnn.serving.registry, srgnn.training.run; "
            "print(mlflow.get_tracking_uri())")
    env = {**os.environ, "SRGNN_HOME": str(home),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True,
                         text=True, check=True)
    assert str(home) not in out.stdout  # the tracking URI was not pointed at the project home
    assert not home.exists()
    assert list(workdir.iterdir()) == []  # no database file, no mlruns folder


# --------------------------------------------------------------------------------------------
# Slow: the registry with real MLflow (SQLite store in a temporary home)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    experiment_id = registry.configure(settings)
    return settings, experiment_id


@pytest.fixture(scope="module")
def history(store, runs):
    """Three candidates through the gate, in order:

    1. a weak model (one short epoch on run1): the first model, so it becomes champion;
    2. a damaged model (random weights, run1's vocabulary): worse, the champion stays;
    3. a well trained model on run2 (another vocabulary for the same items): it beats the
       champion, which is evaluated on run2's examples through raw ids.
    """
    run1, run2 = runs
    weak = train_recommender(run1, replace(TINY, max_examples_per_epoch=600, lr=0.01))
    damaged = random_recommender(run1, seed=5)
    strong = train_recommender(run2, replace(TINY, hidden_size=32, epochs=3))
    out = {"recommenders": {"weak": weak, "damaged": damaged, "strong": strong}, "gates": {},
           "versions": {}}
    for name, recommender, run in (("weak", weak, run1), ("damaged", damaged, run1),
                                   ("strong", strong, run2)):
        version, gate = log_and_gate(recommender, run)
        out["versions"][name] = str(version)
        out["gates"][name] = gate
        out[f"champion_after_{name}"] = str(registry.champion_version().version)
    return out


def version_tags(version: str) -> dict:
    return registry.client().get_model_version(registry.MODEL_NAME, version).tags


@pytest.mark.slow
def test_configure_keeps_store_and_artifacts_under_home(store, history):
    settings, experiment_id = store
    experiment = registry.client().get_experiment(experiment_id)
    assert experiment.name == registry.EXPERIMENT_NAME
    assert experiment.artifact_location == settings.artifact_root
    assert (settings.home / "mlflow.db").is_file()
    model_files = list((settings.home / "mlartifacts").rglob("recommender.json"))
    assert len(model_files) == 3  # one per logged version
    assert registry.configure(settings) == experiment_id  # a second call finds the same experiment


@pytest.mark.slow
def test_first_model_becomes_champion(history):
    gate = history["gates"]["weak"]
    assert gate.decision == gates.DECISION_FIRST and gate.promoted
    assert history["champion_after_weak"] == history["versions"]["weak"]
    tags = version_tags(history["versions"]["weak"])
    assert tags["gate.decision"] == "first model"
    assert float(tags["gate.candidate_hr_at_20"]) == pytest.approx(gate.candidate["HR@20"], abs=1e-6)
    assert "gate.champion_hr_at_20" not in tags


@pytest.mark.slow
def test_gate_refuses_a_worse_model_and_says_why(history):
    gate = history["gates"]["damaged"]
    assert gate.decision == gates.DECISION_KEPT and not gate.promoted
    assert history["champion_after_damaged"] == history["versions"]["weak"]
    assert gate.champion_version == history["versions"]["weak"]
    assert gate.candidate["HR@20"] < gate.champion["HR@20"]
    tags = version_tags(history["versions"]["damaged"])
    assert tags["gate.decision"] == "kept champion"
    assert tags["gate.champion_version"] == history["versions"]["weak"]
    assert float(tags["gate.candidate_hr_at_20"]) < float(tags["gate.champion_hr_at_20"])
    assert "lower HR@20" in tags["gate.reason"]
    assert tags["gate.split"] == "test" and int(tags["gate.examples"]) == gate.examples > 500


@pytest.mark.slow
def test_better_model_moves_the_alias_across_vocabularies(history, runs):
    run1, _ = runs
    gate = history["gates"]["strong"]
    assert gate.decision == gates.DECISION_PROMOTED and gate.promoted
    assert history["champion_after_strong"] == history["versions"]["strong"]
    assert gate.previous_champion_version == history["versions"]["weak"]
    assert gate.candidate["HR@20"] > gate.champion["HR@20"]
    # The old champion was judged on run2's examples through raw ids: the same figures as on
    # run1, its own vocabulary's preparation of the same sessions.
    weak_on_run1 = evaluate_on(history["recommenders"]["weak"], run1, "test")
    assert gate.champion["HR@20"] == weak_on_run1["HR@20"]
    assert gate.champion["MRR@20"] == pytest.approx(weak_on_run1["MRR@20"], abs=1e-12)
    tags = version_tags(history["versions"]["strong"])
    assert tags["gate.decision"] == "promoted"
    assert float(tags["gate.champion_hr_at_20"]) == pytest.approx(gate.champion["HR@20"], abs=1e-6)


@pytest.mark.slow
def test_champion_round_trip_as_pyfunc_and_as_recommender(history, runs, tmp_path):
    import mlflow

    _, run2 = runs
    strong = history["recommenders"]["strong"]
    sessions = RunFolder(run2).raw_examples("test")[0].slice(0, 40).to_pylist()
    sessions += [["sku-unknown", sessions[0][0]], ["sku-unknown"], []]  # unknown and empty
    expected = strong.recommend(sessions, k=10)

    loaded, info = registry.load_recommender("models:/srgnn@champion")
    assert (info.name, info.version) == ("srgnn", history["versions"]["strong"])
    assert info.resolved_uri == f"models:/srgnn/{info.version}"
    assert info.tags["gate.decision"] == "promoted"
    got = loaded.recommend(sessions, k=10)
    assert got.item_ids.tolist() == expected.item_ids.tolist()
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)

    served = mlflow.pyfunc.load_model("models:/srgnn@champion")
    frame = served.predict(pyfunc_module.input_frame(sessions), params={"k": 10})
    assert list(frame.columns) == ["item_ids", "scores", "source"]
    assert [list(row) for row in frame["item_ids"]] == expected.item_ids.tolist()
    np.testing.assert_allclose(np.array([list(r) for r in frame["scores"]]), expected.scores,
                               rtol=1e-6)
    assert frame["source"].tolist() == expected.source.tolist()
    assert frame["source"].tolist()[-3:] == ["model", "fallback:pop", "fallback:pop"]
    default_k = served.predict(pyfunc_module.input_frame(sessions[:2]))
    assert len(default_k["item_ids"].iloc[0]) == 20  # the signature's default k

    schema = served.metadata.get_input_schema()
    assert schema.input_names() == ["items"]
    assert served.metadata.get_params_schema().to_dict()[0]["name"] == "k"

    # The same model from local folders: a downloaded MLflow model and a saved recommender.
    downloaded = mlflow.artifacts.download_artifacts(f"models:/srgnn/{info.version}",
                                                     dst_path=str(tmp_path / "dl"))
    from_folder, folder_info = registry.load_recommender(downloaded)
    assert folder_info.version is None
    assert from_folder.recommend(sessions, k=10).item_ids.tolist() == expected.item_ids.tolist()
    strong.save(tmp_path / "saved")
    from_saved, _ = registry.load_recommender(str(tmp_path / "saved"))
    assert from_saved.recommend(sessions, k=10).item_ids.tolist() == expected.item_ids.tolist()


@pytest.mark.slow
def test_load_recommender_names_missing_models(store, tmp_path):
    with pytest.raises(FileNotFoundError):
        registry.load_recommender(str(tmp_path / "nothing-here"))
    with pytest.raises(Exception, match="(?i)alias|not found|does not exist"):
        registry.load_recommender("models:/srgnn@no-such-alias")
