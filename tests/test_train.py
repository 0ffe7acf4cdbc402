"""Tests of srgnn.training.loop: learning on structured data, checkpoints, exact resume, early stopping."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from srgnn.data.samples import clustered_sessions, split_sessions, write_graph_parquet
from srgnn.config import TrainConfig
from srgnn.cpu import resolve_precision
from srgnn.model.reader import parquet_files
from srgnn.serving.predict import Scorer
from srgnn.training.checkpoints import BEST_MODEL_NAME, CHECKPOINT_NAME
from srgnn.training.loop import Replicas, refit, torch_threads, train, validate

NUM_ITEMS = 120


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    sessions = clustered_sessions(num_items=NUM_ITEMS, num_sessions=2500, cluster_size=8, seed=11)
    train_sessions, valid_sessions = split_sessions(sessions, valid_share=0.2)
    write_graph_parquet(root / "graphs" / "train", train_sessions, files=2, row_group_size=1500)
    write_graph_parquet(root / "graphs" / "valid", valid_sessions)
    return root / "graphs" / "train", root / "graphs" / "valid"


# One thread: these models are tiny, and on a busy shared CI machine two OpenMP threads made the
# steps several times slower than one.
SMALL = TrainConfig(hidden_size=16, batch_size=50, epochs=3, progress=False, seed=4, num_threads=1)


def popularity_hit_rate(train_dir, valid_dir, k=20) -> float:
    """HR@k of ranking every item by how often it is a training target (ties: lower index)."""
    train_targets = pq.read_table(train_dir, columns=["target"]).column("target").to_numpy()
    valid_targets = pq.read_table(valid_dir, columns=["target"]).column("target").to_numpy()
    counts = np.bincount(train_targets, minlength=NUM_ITEMS + 1)[1:]
    top = np.argsort(-counts, kind="stable")[:k] + 1
    return float(np.isin(valid_targets, top).mean())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_short_training_lowers_the_loss_and_beats_popularity(splits, precision):
    train_dir, valid_dir = splits
    config = replace(SMALL, hidden_size=32, epochs=4, precision=precision)
    result = train(train_dir, valid_dir, NUM_ITEMS, config)

    losses = [epoch.train_loss for epoch in result.history]
    assert len(losses) == 4
    assert losses[0] < np.log(NUM_ITEMS)  # learning starts within the first epoch
    assert losses[-1] < 0.7 * losses[0]
    popularity = popularity_hit_rate(train_dir, valid_dir)
    assert result.best_valid_hit_rate > popularity + 0.3, (result.best_valid_hit_rate, popularity)
    assert result.history[result.best_epoch - 1].valid_hit_rate == result.best_valid_hit_rate

    # The reported metric agrees with top-20 lists made by the scorer from the raw prefixes.
    table = pq.read_table(valid_dir, columns=["prefix", "target"])
    prefixes = table.column("prefix").combine_chunks()
    top = Scorer.from_state_dict(result.best_state_dict, result.model_config).top_k(
        prefixes.flatten().to_numpy(), prefixes.offsets.to_numpy(), k=20
    )
    hits = (top.items == table.column("target").to_numpy()[:, None]).any(axis=1)
    assert hits.mean() == pytest.approx(result.best_valid_hit_rate, abs=1e-9)
    again = validate(result.best_model(), valid_dir, k=20)
    assert again["HR@20"] == pytest.approx(result.best_valid_hit_rate, abs=1e-12)
    assert again["examples"] == table.num_rows


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_repeats_the_uninterrupted_run(splits, tmp_path):
    train_dir, valid_dir = splits
    config = replace(SMALL, max_examples_per_epoch=1500, max_valid_examples=600)
    uninterrupted = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "a")

    def crash_after_second_epoch(stats):
        if stats.epoch == 2:
            raise Crash("simulated crash after the checkpoint of epoch 2")

    with pytest.raises(Crash):
        train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b",
              on_epoch_end=crash_after_second_epoch)
    partial = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    assert partial["epoch"] == 2

    seen = []
    resumed = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b",
                    resume=True, on_epoch_end=seen.append)
    assert [stats.epoch for stats in seen] == [3]  # only the missing epoch ran

    def outcome(stats):
        return (stats.epoch, stats.train_loss, stats.valid_hit_rate, stats.valid_mrr,
                stats.learning_rate, stats.train_examples)

    assert list(map(outcome, resumed.history)) == list(map(outcome, uninterrupted.history))
    assert resumed.best_epoch == uninterrupted.best_epoch
    final_a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)
    final_b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    for name, tensor in final_a["model"].items():
        assert torch.equal(tensor, final_b["model"][name]), name
    for name, tensor in uninterrupted.best_state_dict.items():
        assert torch.equal(tensor, resumed.best_state_dict[name]), name
    assert final_a["optimizer"]["state"][0]["step"] == final_b["optimizer"]["state"][0]["step"]
    # The epochs really differ from each other: a resume that replayed epoch 2 would not match.
    assert len({stats.train_loss for stats in uninterrupted.history}) == 3


def test_checkpoint_files_and_resume_guards(splits, tmp_path):
    train_dir, valid_dir = splits
    config = replace(SMALL, epochs=1, max_examples_per_epoch=200, max_valid_examples=100)
    result = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).exists() and (tmp_path / BEST_MODEL_NAME).exists()
    assert not list(tmp_path.glob("*.partial"))
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert set(checkpoint) >= {"model", "optimizer", "scheduler", "rng", "epoch", "history",
                               "best_hit_rate", "config"}
    assert checkpoint["config"] == asdict(config)
    scorer = Scorer.from_checkpoint(tmp_path / BEST_MODEL_NAME)
    assert scorer.num_items == NUM_ITEMS

    # Resuming a finished run returns it without training again.
    again = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path, resume=True,
                  on_epoch_end=lambda stats: pytest.fail("no epoch should run"))
    assert again.best_epoch == result.best_epoch == 1
    for name, tensor in result.best_state_dict.items():
        assert torch.equal(tensor, again.best_state_dict[name])

    with pytest.raises(ValueError, match="lr"):
        train(train_dir, valid_dir, NUM_ITEMS, replace(config, lr=0.01), output_dir=tmp_path,
              resume=True)
    with pytest.raises(ValueError, match="num_items"):
        train(train_dir, valid_dir, NUM_ITEMS + 1, config, output_dir=tmp_path, resume=True)
    other = "float32" if resolve_precision(config.precision) == "bfloat16" else "bfloat16"
    with pytest.raises(ValueError, match=r"\(precision differ\)"):
        train(train_dir, valid_dir, NUM_ITEMS, replace(config, precision=other), output_dir=tmp_path,
              resume=True)

    # A checkpoint written before the precision option computed in float32, and resumes as such.
    checkpoint["config"].pop("precision")
    torch.save(checkpoint, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match=r"\(precision differ\)"):
        train(train_dir, valid_dir, NUM_ITEMS, replace(config, precision="bfloat16"),
              output_dir=tmp_path, resume=True)
    train(train_dir, valid_dir, NUM_ITEMS, replace(config, precision="float32"), output_dir=tmp_path,
          resume=True, on_epoch_end=lambda stats: pytest.fail("no epoch should run"))
    with pytest.raises(ValueError, match="output_dir"):
        train(train_dir, valid_dir, NUM_ITEMS, config, resume=True)


def test_learning_rate_decays_in_steps_and_threads_are_restored(splits):
    train_dir, valid_dir = splits
    config = replace(SMALL, lr_decay_step=2, epochs=3, num_threads=1,
                     max_examples_per_epoch=100, max_valid_examples=100)
    threads = torch.get_num_threads()
    result = train(train_dir, valid_dir, NUM_ITEMS, config)
    rates = [stats.learning_rate for stats in result.history]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4])
    assert torch.get_num_threads() == threads
    assert all(stats.train_examples == 100 for stats in result.history)
    assert result.history[0].examples_per_second > 0


def test_early_stopping_after_patience_epochs_without_improvement(splits):
    train_dir, valid_dir = splits
    # A learning rate far below float32 resolution leaves the weights, hence HR@20, unchanged.
    config = replace(SMALL, lr=1e-20, epochs=6, patience=2,
                     max_examples_per_epoch=100, max_valid_examples=200)
    result = train(train_dir, valid_dir, NUM_ITEMS, config)
    assert [stats.epoch for stats in result.history] == [1, 2, 3]
    assert result.stopped_early and result.best_epoch == 1
    assert result.stop_reason == "patience"


class ScriptedValidation(Replicas):
    """One process, as the default, whose validation HR@20 follows a script (the training
    itself is real); MRR@20 is a tenth of it."""

    def __init__(self, hit_rates):
        self.hit_rates = list(hit_rates)
        self.calls = 0

    def validation(self, model, reader, k):
        hit_rate = self.hit_rates[self.calls]
        self.calls += 1
        return {f"HR@{k}": hit_rate, f"MRR@{k}": hit_rate / 10}


def test_gains_below_min_improvement_do_not_count_and_patience_stops(splits):
    train_dir, valid_dir = splits
    config = replace(SMALL, epochs=6, patience=2, max_examples_per_epoch=100, max_valid_examples=100)
    creeping = [0.30, 0.3002, 0.3004, 0.3006, 0.3008, 0.3010]  # +0.02 point an epoch
    result = train(train_dir, valid_dir, NUM_ITEMS, replace(config, min_improvement=0.0005),
                   replicas=ScriptedValidation(creeping))
    assert [stats.epoch for stats in result.history] == [1, 2, 3]
    assert result.stop_reason == "patience" and result.stopped_early
    assert result.best_epoch == 1 and result.best_valid_hit_rate == 0.30
    # The same gains count without a minimum: every epoch is better, the last one is kept.
    every = train(train_dir, valid_dir, NUM_ITEMS, replace(config, min_improvement=0.0),
                  replicas=ScriptedValidation(creeping))
    assert len(every.history) == 6 and every.best_epoch == 6
    assert every.stop_reason == "epochs" and not every.stopped_early
    # A gain larger than the minimum counts, and restarts the patience.
    jumps = [0.30, 0.3004, 0.3010, 0.3012, 0.3013, 0.3014]
    jumped = train(train_dir, valid_dir, NUM_ITEMS, replace(config, min_improvement=0.0005),
                   replicas=ScriptedValidation(jumps))
    assert jumped.best_epoch == 3 and [s.epoch for s in jumped.history] == [1, 2, 3, 4, 5]


def test_no_epoch_starts_below_the_learning_rate_floor(splits, tmp_path, caplog):
    train_dir, valid_dir = splits
    config = replace(SMALL, lr=1e-3, lr_decay_step=1, lr_decay_rate=0.1, lr_floor=1e-5,
                     epochs=10, patience=10, max_examples_per_epoch=100, max_valid_examples=100)
    with caplog.at_level("INFO", logger="srgnn.training.loop"):
        result = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "a")
    assert [s.learning_rate for s in result.history] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert result.stop_reason == "lr_floor" and result.stopped_early
    assert "lr_floor" in caplog.records[-1].getMessage()
    assert torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["stop_reason"] == "lr_floor"
    # A lower floor lets the fourth epoch (1e-6) run.
    lower = train(train_dir, valid_dir, NUM_ITEMS, replace(config, lr_floor=1e-6, epochs=4))
    assert len(lower.history) == 4 and lower.stop_reason == "epochs"

    # Resume: two epochs, then the same run with room for ten goes on to the floor, exactly.
    train(train_dir, valid_dir, NUM_ITEMS, replace(config, epochs=2), output_dir=tmp_path / "b")
    resumed = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b", resume=True)
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in result.history]
    assert resumed.stop_reason == "lr_floor"
    # A stopped run resumed again trains nothing and keeps its reason.
    again = train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path / "b", resume=True,
                  on_epoch_end=lambda stats: pytest.fail("no epoch should run"))
    assert again.stop_reason == "lr_floor" and len(again.history) == 3


def test_a_checkpoint_from_before_the_stopping_settings_resumes(splits, tmp_path):
    train_dir, valid_dir = splits
    config = replace(SMALL, epochs=1, max_examples_per_epoch=100, max_valid_examples=100)
    train(train_dir, valid_dir, NUM_ITEMS, config, output_dir=tmp_path)
    checkpoint = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    for name in ("min_improvement", "lr_floor", "refit", "final_refit"):
        checkpoint["config"].pop(name, None)
    checkpoint.pop("stop_reason")
    torch.save(checkpoint, tmp_path / CHECKPOINT_NAME)
    seen = []
    resumed = train(train_dir, valid_dir, NUM_ITEMS, replace(config, epochs=2), output_dir=tmp_path,
                    resume=True, on_epoch_end=seen.append)
    assert [s.epoch for s in seen] == [2] and resumed.stop_reason == "epochs"


def test_config_validation_and_vocab_size(tmp_path):
    from srgnn.cpu import native_bfloat16, usable_cores
    from srgnn.data.runfolder import RunFolder

    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr must"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="max_examples_per_epoch"):
        TrainConfig(max_examples_per_epoch=0)
    with pytest.raises(ValueError, match="lr_floor must be at least 0, not -1e-05"):
        TrainConfig(lr_floor=-1e-5)
    with pytest.raises(ValueError, match="min_improvement must be at least 0, not nan"):
        TrainConfig(min_improvement=float("nan"))
    assert torch_threads(TrainConfig()) == usable_cores() >= 1
    assert torch_threads(TrainConfig(num_threads=3)) == 3
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16"):
        TrainConfig(precision="half")
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16() else "float32")
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    import pyarrow as pa

    vocab = pa.table({"item_id": ["a", "b", "c"], "item_index": pa.array([1, 2, 3], pa.int32()),
                      "train_clicks": pa.array([5, 3, 1], pa.int64())})
    pq.write_table(vocab, tmp_path / "vocab.parquet")
    assert RunFolder(tmp_path).num_items == 3


def test_training_without_validation_keeps_the_last_epoch(splits, tmp_path):
    train_dir, _ = splits
    config = replace(SMALL, epochs=2, max_examples_per_epoch=100)
    result = train(train_dir, None, NUM_ITEMS, config)
    assert result.best_epoch == 2 and np.isnan(result.best_valid_hit_rate)
    # A split written without rows (as Spark does for an empty DataFrame) counts as none.
    empty = tmp_path / "valid"
    empty.mkdir()
    pq.write_table(pq.read_table(train_dir).slice(0, 0), empty / "part-00000.parquet")
    again = train(train_dir, empty, NUM_ITEMS, config)
    assert again.best_epoch == 2
    for name, tensor in result.best_state_dict.items():
        assert torch.equal(tensor, again.best_state_dict[name]), name
    with pytest.raises(ValueError, match="no examples"):
        train(empty, None, NUM_ITEMS, config)


def test_each_epoch_logs_loss_validation_speed_and_learning_rate(splits, caplog):
    train_dir, valid_dir = splits
    config = replace(SMALL, epochs=2, max_examples_per_epoch=100, lr_decay_step=1)
    with caplog.at_level("INFO", logger="srgnn.training.loop"):
        result = train(train_dir, valid_dir, NUM_ITEMS, config)
        train(train_dir, None, NUM_ITEMS, replace(config, epochs=1))
    lines = [r.getMessage() for r in caplog.records if r.name == "srgnn.training.loop"
             and r.getMessage().startswith("epoch ")]
    assert len(lines) == 3, lines
    second = result.history[1]
    assert lines[1].startswith(f"epoch 2/2: loss {second.train_loss:.4f}, "
                               f"valid HR@20 {100 * second.valid_hit_rate:.2f}%, "
                               f"MRR@20 {100 * second.valid_mrr:.2f}%, ")
    assert ", lr 0.0001, " in lines[1]  # decayed after epoch 1
    assert lines[2].startswith("epoch 1/1: loss ") and "no validation split" in lines[2]
    assert "nan" not in lines[2]


@pytest.mark.slow
def test_refit_trains_on_every_source_for_the_chosen_epochs(splits, tmp_path):
    train_dir, valid_dir = splits
    rows = {d: pq.read_table(d, columns=["target"]).num_rows for d in splits}
    config = replace(SMALL, epochs=9, patience=1)  # epochs and patience give way to refit's
    both = refit([train_dir, valid_dir], NUM_ITEMS, 2, config, output_dir=tmp_path / "refit")
    assert [s.epoch for s in both.history] == [1, 2] and both.best_epoch == 2
    assert all(s.train_examples == rows[train_dir] + rows[valid_dir] for s in both.history)
    assert np.isnan(both.best_valid_hit_rate)
    assert (tmp_path / "refit" / CHECKPOINT_NAME).is_file()
    # The valid examples were training data now: the refit model ranks their targets better
    # than the model of the same settings that never saw them.
    alone = train(train_dir, None, NUM_ITEMS, replace(config, epochs=2))
    seen, unseen = validate(both.best_model(), valid_dir), validate(alone.best_model(), valid_dir)
    assert seen["MRR@20"] > unseen["MRR@20"]


def test_refit_arguments_and_parquet_files(splits, tmp_path):
    train_dir, _ = splits
    (train_dir / "_SUCCESS").touch()
    files = parquet_files(train_dir)
    assert len(files) == 2 and all(f.endswith(".parquet") and "/." not in f for f in files)
    with pytest.raises(ValueError, match="at least one epoch"):
        refit([train_dir], NUM_ITEMS, 0, SMALL)
    with pytest.raises(FileNotFoundError, match="no Parquet file or folder"):
        refit([train_dir, tmp_path / "missing"], NUM_ITEMS, 1, SMALL)
