"""Data-parallel training (srgnn.training.distributed): two real processes joined by gloo on
localhost train exactly as one process does on the same global batches.

Each rank reads only its shard of the training split and steps on local batches; DDP
averages the weighted gradients. After an epoch of three or four optimizer steps, the
parameters, the training loss and the validation figures of the two ranks must equal those of
a single process that steps on the union of the ranks' local batches (read back from the
Parquet file by content), step by step, from the same seed.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp

from srgnn.config import TrainConfig
from srgnn.data.samples import clustered_sessions, split_sessions, write_graph_parquet
from srgnn.model.reader import GRAPH_COLUMNS, GraphParquetReader
from srgnn.model.network import SRGNN
from srgnn.training.distributed import DataParallel
from srgnn.training.loop import _make_optimizer, model_config, train, training_step, validate

NUM_ITEMS = 60
CONFIG = TrainConfig(hidden_size=8, batch_size=100, epochs=1, progress=False, seed=5,
                     num_threads=1, precision="float32", eval_batch_size=37)
# 201 examples an epoch over 2 ranks: 100 from rank 0's shard, 101 from rank 1's.
# Batch 100: local batches of 50; steps 50 + 50, 50 + 50, then 0 + 1 (rank 0 has run out
# and steps on a placeholder row weighed 0). Batch 67: local batches of 33 and 34; steps
# 33 + 34, 33 + 34, 33 + 33, then 1 + 0.
CASES = {"even_and_empty": (201, CONFIG), "uneven": (201, replace(CONFIG, batch_size=67))}
SERVED = {"even_and_empty": [[50, 50, 0], [50, 50, 1]],
          "uneven": [[33, 33, 33, 1], [34, 34, 33, 0]]}


class _Recording(DataParallel):
    """DataParallel that keeps every local batch it serves, with its rows."""

    def shard(self, reader):
        return _Recorded(super().shard(reader), self)


class _Recorded:
    def __init__(self, shard, replicas: _Recording) -> None:
        self.shard, self.replicas, self.served = shard, replicas, []
        replicas.served = self.served

    def __len__(self) -> int:
        return len(self.shard)

    def batches(self, epoch: int = 0):
        for batch in self.shard.batches(epoch):
            self.served.append((batch, self.replicas._rows))
            yield batch


def _rank(rank: int, world_size: int, init_file: str, splits: dict, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        results = {}
        for name, (train_dir, valid_dir, config) in splits.items():
            replicas = _Recording(rank, world_size)
            result = train(train_dir, valid_dir, NUM_ITEMS, config, replicas=replicas)
            results[name] = (result.best_state_dict, result.history[-1], replicas.served)
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _session_key(items, target) -> tuple:
    return tuple(int(i) for i in items), int(target)


def _union_batch(train_dir, local_batches, folder):
    """The global batch of one step: the rows of the ranks' local batches (``(batch, rows)``),
    found in the Parquet split by content and read back as one batch."""
    table = pq.read_table(train_dir, columns=list(GRAPH_COLUMNS))
    where: dict = {}
    for row, (nodes, alias, target) in enumerate(zip(*(table.column(c).to_pylist()
                                                       for c in ("nodes", "alias", "target")))):
        where.setdefault(_session_key([nodes[a] for a in alias], target), []).append(row)
    rows = []
    for batch, own in local_batches:
        for s in range(own):
            clicks = batch.alias[s, : batch.prefix_lengths[s]]
            rows.append(where[_session_key(batch.node_items[clicks], batch.targets[s])].pop())
    path = folder / f"step{len(list(folder.glob('*.parquet')))}.parquet"
    pq.write_table(table.take(rows), path)
    batch, = GraphParquetReader(path, len(rows)).batches()
    return batch


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


@pytest.mark.slow
def test_two_ranks_take_the_single_process_steps_on_the_same_global_batches(splits, tmp_path):
    out = tmp_path / "rank"
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), splits, str(out)), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]
    for name, (train_dir, valid_dir, config) in splits.items():
        (weights, stats, served0), (weights1, _, served1) = ranks[0][name], ranks[1][name]
        assert [[rows for _, rows in served] for served in (served0, served1)] == SERVED[name]
        # One process from the same seed, one step on each union of the two local batches.
        torch.manual_seed(config.seed)
        model = SRGNN(model_config(config, NUM_ITEMS))
        start = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer = _make_optimizer(model, config)
        folder = tmp_path / name
        folder.mkdir()
        loss_sum = 0.0
        for local in zip(served0, served1):
            batch = _union_batch(train_dir, local, folder)
            loss_sum += training_step(model, optimizer, batch) * batch.batch_size
        assert stats.train_examples == 201
        for key, value in model.state_dict().items():
            torch.testing.assert_close(weights[key], value, atol=1e-5, rtol=0,
                                       msg=lambda m, key=key: f"{name} {key}: {m}")
            torch.testing.assert_close(weights1[key], weights[key], atol=0, rtol=0)
        # The weights moved: three or four steps from the seeded start.
        assert (weights["embedding.weight"] - start["embedding.weight"]).abs().max() > 1e-4
        assert stats.train_loss == pytest.approx(loss_sum / 201, abs=1e-5)
        figures = validate(model, valid_dir, k=config.top_k, batch_size=config.eval_batch_size)
        assert stats.valid_hit_rate == figures[f"HR@{config.top_k}"]
        assert stats.valid_mrr == pytest.approx(figures[f"MRR@{config.top_k}"], abs=1e-9)


def test_a_rank_reads_only_the_row_groups_of_its_shard(tmp_path):
    sessions = clustered_sessions(num_items=NUM_ITEMS, num_sessions=30, cluster_size=6, seed=2)
    path = write_graph_parquet(tmp_path / "train", sessions, row_group_size=10)
    table = pq.read_table(path, columns=["target"])
    assert table.num_rows == 116  # 12 row groups: 11 of 10 rows and one of 6
    targets = table.column("target").to_pylist()
    # Rank 1 of 2 owns rows 58..115: row groups 5..11 (rows 50..115) are read, 0..4 are not.
    reader = GraphParquetReader(path, 10, shuffle=True, seed=3, part=(1, 2))
    steps = list(reader.steps(0))
    assert reader.rows_read == 66
    assert sorted(t for batch, _, _ in steps for t in batch.targets.tolist()) \
        == sorted(targets[58:])
    assert [(rows, step_rows) for _, rows, step_rows in steps] == [(5, 10)] * 11 + [(3, 6)]
    # Shuffled by epoch and rank: another epoch serves the same rows in another order.
    again = [t for batch in reader.batches(1) for t in batch.targets.tolist()]
    first = [t for batch, _, _ in steps for t in batch.targets.tolist()]
    assert sorted(again) == sorted(first) and again != first
    assert reader.rows_read == 2 * 66
    # Rank 0 owns rows 0..57: row groups 0..5.
    rank0 = GraphParquetReader(path, 10, part=(0, 2))
    assert [t for batch in rank0.batches() for t in batch.targets.tolist()] == targets[:58]
    assert rank0.rows_read == 60


def test_the_epoch_cap_counts_the_examples_of_all_ranks(tmp_path):
    sessions = clustered_sessions(num_items=NUM_ITEMS, num_sessions=30, cluster_size=6, seed=2)
    path = write_graph_parquet(tmp_path / "train", sessions, files=2, row_group_size=10)
    whole = GraphParquetReader(path, 7, shuffle=True, max_examples=45)
    parts = [whole.part_of(rank, 3) for rank in range(3)]  # local batches of 2, 2 and 3
    assert [p.num_examples for p in parts] == [15, 15, 15]
    steps = [[(rows, step_rows) for _, rows, step_rows in p.steps(0)] for p in parts]
    assert [len(s) for s in steps] == [len(p) for p in parts] == [8] * 3
    assert [rows for rows, _ in steps[2]] == [3, 3, 3, 3, 3, 0, 0, 0]  # two placeholders
    assert [rows for rows, _ in steps[0]] == [2] * 7 + [1]
    assert [step_rows for _, step_rows in steps[0]] == [7] * 5 + [4, 4, 2]
    assert all(s[step][1] == sum(p[step][0] for p in steps) for s in steps for step in range(8))
    assert whole.rows_read == 0  # the parts read, the reader they came from did not
    with pytest.raises(ValueError, match="at least 3"):
        GraphParquetReader(path, 2, part=(0, 3))


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
    # never leave a share empty, 1 row over 2 ranks does (how validation is shared).
    single = GraphParquetReader(train_dir, 5, max_examples=1)
    (empty, rows, batch_rows), = single.shard(0, 0, 2)
    assert (rows, batch_rows, empty.batch_size) == (0, 1, 1)
    with pytest.raises(ValueError):
        next(iter(single.shard(0, 2, 2)))


@pytest.mark.parametrize("config, message", [
    (TrainConfig(processes=2, softmax="sampled"), "uses the full softmax"),
    (TrainConfig(processes=3, batch_size=2, softmax="full"), r"batch size \(2\) must be at least"),
])
def test_settings_that_cannot_work_are_refused_before_anything_starts(tmp_path, config, message):
    from srgnn.config import SettingError, Settings
    from srgnn.training.run import run_training
    from test_registry import synthetic_splits, write_run_folder

    run_dir = write_run_folder(tmp_path / "run", synthetic_splits(num_sessions=40, seed=1))
    with pytest.raises(SettingError, match=message):
        run_training(Settings(home=tmp_path / "home"), run_dir, config)
    assert not (tmp_path / "home").exists()  # neither MLflow nor Spark was started


def test_train_refuses_sampled_softmax_on_replicas_of_several_processes(splits):
    train_dir, valid_dir, config = splits["uneven"]
    sampled = replace(config, softmax="auto", sampled_softmax_above=NUM_ITEMS - 1)
    # Refused before the model is wrapped in DDP: no process group is needed to see it.
    with pytest.raises(ValueError, match=r"^distributed training \(processes=2\) uses the full "
                                         r"softmax, and these settings choose sampled softmax "
                                         r"for 60 items: set softmax to full"):
        train(train_dir, valid_dir, NUM_ITEMS, sampled, replicas=DataParallel(1, 2))
    # The full softmax passes that check and goes on to DDP, which needs the process group.
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        train(train_dir, valid_dir, NUM_ITEMS, replace(sampled, softmax="full"),
              replicas=DataParallel(1, 2))
