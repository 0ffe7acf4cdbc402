"""Data-parallel training (srgnn.training.distributed): two real processes joined by gloo on
localhost train exactly as one process does.

Each rank trains on its part of every batch; DDP averages the weighted gradients. After an
epoch of three optimizer steps, the parameters, the training loss and the validation figures
of the two ranks must equal those of a single process training on whole batches of the same
data with the same seed.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from srgnn.config import TrainConfig
from srgnn.data.samples import clustered_sessions, split_sessions, write_graph_parquet
from srgnn.model.reader import GraphParquetReader
from srgnn.model.network import SRGNN
from srgnn.training.loop import model_config, train

NUM_ITEMS = 60
CONFIG = TrainConfig(hidden_size=8, batch_size=100, epochs=1, progress=False, seed=5,
                     num_threads=1, precision="float32", eval_batch_size=37)
# Batch 100 over 2 ranks: 50 + 50, 50 + 50, and a last batch of one row (rank 0's share is
# empty: it steps with a placeholder row weighed 0). Batch 67: 33 + 34 three times.
CASES = {"even_and_empty": (201, CONFIG), "uneven": (201, replace(CONFIG, batch_size=67))}


def _rank(rank: int, world_size: int, init_file: str, splits: dict, out: str) -> None:
    import torch.distributed as dist

    from srgnn.training.distributed import DataParallel

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        results = {}
        for name, (train_dir, valid_dir, config) in splits.items():
            results[name] = train(train_dir, valid_dir, NUM_ITEMS, config,
                                  replicas=DataParallel(rank, world_size))
        if rank == 0:
            torch.save({name: (r.best_state_dict, r.history[-1]) for name, r in results.items()},
                       out)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    sessions = clustered_sessions(num_items=NUM_ITEMS, num_sessions=160, cluster_size=6, seed=2)
    train_sessions, valid_sessions = split_sessions(sessions, valid_share=0.25)
    out = {}
    for name, (rows, config) in CASES.items():
        train_dir = write_graph_parquet(root / name / "train", train_sessions, files=2,
                                        row_group_size=90)
        reader = GraphParquetReader(train_dir)
        assert reader.num_examples >= rows
        out[name] = (train_dir, write_graph_parquet(root / name / "valid", valid_sessions),
                     replace(config, max_examples_per_epoch=rows))
    return out


def test_two_ranks_take_the_single_process_steps(splits, tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), splits, str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=False)
    for name, (train_dir, valid_dir, config) in splits.items():
        single = train(train_dir, valid_dir, NUM_ITEMS, config)
        weights, stats = distributed[name]
        assert stats.train_examples == single.history[-1].train_examples == 201
        for key, value in single.best_state_dict.items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0,
                                       msg=lambda m, key=key: f"{name} {key}: {m}")
        # The weights moved: three steps from the seeded start.
        torch.manual_seed(config.seed)
        start = SRGNN(model_config(config, NUM_ITEMS)).state_dict()
        assert (weights["embedding.weight"] - start["embedding.weight"]).abs().max() > 1e-4
        assert stats.train_loss == pytest.approx(single.history[-1].train_loss, abs=1e-5)
        assert stats.valid_hit_rate == single.history[-1].valid_hit_rate
        assert stats.valid_mrr == pytest.approx(single.history[-1].valid_mrr, abs=1e-9)


def test_each_rank_gets_its_consecutive_share_of_every_batch(splits):
    train_dir, _, _ = splits["uneven"]
    reader = GraphParquetReader(train_dir, 5, shuffle=True, seed=3, max_examples=13)
    whole = [batch.targets.tolist() for batch in reader.batches(1)]
    shares = [list(reader.shard(1, rank, 3)) for rank in range(3)]
    assert [len(s) for s in shares] == [len(whole)] * 3 == [3] * 3
    for step, targets in enumerate(whole):  # 5, 5, 3 rows
        joined = []
        for rank in range(3):
            batch, rows, batch_rows = shares[rank][step]
            assert batch_rows == len(targets)
            joined += batch.targets.tolist()[:rows]
        assert joined == targets
    # The last batch of 3 rows over 3 ranks is one row each; 13 rows over 3 ranks of batch 5
    # never leave a share empty, 1 row over 2 ranks does.
    single = GraphParquetReader(train_dir, 5, max_examples=1)
    (empty, rows, batch_rows), = single.shard(0, 0, 2)
    assert (rows, batch_rows, empty.batch_size) == (0, 1, 1)
    with pytest.raises(ValueError):
        next(iter(single.shard(0, 2, 2)))


def test_sampled_softmax_is_refused_before_anything_starts(tmp_path):
    from srgnn.config import SettingError, Settings
    from srgnn.training.run import run_training
    from test_registry import synthetic_splits, write_run_folder

    run_dir = write_run_folder(tmp_path / "run", synthetic_splits(num_sessions=40, seed=1))
    with pytest.raises(SettingError, match="uses the full softmax"):
        run_training(Settings(home=tmp_path / "home"), run_dir,
                     TrainConfig(processes=2, softmax="sampled"))
    assert not (tmp_path / "home").exists()  # neither MLflow nor Spark was started
