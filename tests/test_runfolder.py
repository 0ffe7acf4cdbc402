"""A run folder is complete only when prepare finished it; a half-written one is refused."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srgnn.config import PrepareConfig
from srgnn.data.inputs import InputError
from srgnn.data.runfolder import IN_PROGRESS, SUMMARY, RunFolder

from conftest import write_text

BASE = 1_700_006_400  # 2023-11-15 00:00:00 UTC


def write_vocab(folder):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": ["a", "b"], "item_index": pa.array([1, 2], pa.int32()),
                             "train_clicks": pa.array([3, 1], pa.int64())}), folder / "vocab.parquet")


def test_completeness_of_old_new_half_written_and_hand_made_folders(tmp_path):
    old = tmp_path / "old"  # written before the marker existed: summary.json means complete
    write_vocab(old)
    (old / SUMMARY).write_text(json.dumps({"examples": 1}))
    assert RunFolder(old).is_complete() and RunFolder(old).require_complete().num_items == 2
    assert RunFolder(old).summary() == {"examples": 1}

    half = tmp_path / "half"  # a prepare that began and did not finish
    write_vocab(half)
    (half / IN_PROGRESS).write_text("{}")
    run = RunFolder(half)
    assert not run.is_complete()
    for read in (lambda: run.num_items, lambda: run.examples("test"), lambda: run.sessions("train"),
                 run.held_out_split, run.summary, run.require_complete):
        with pytest.raises(InputError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{half}: incomplete run folder") and "prepare it again" in message
        assert "\n" not in message
    # the marker wins over a summary.json left by the run before
    (half / SUMMARY).write_text("{}")
    assert not RunFolder(half).is_complete()

    hand = tmp_path / "hand"  # assembled without prepare (tests): readable, but not complete
    write_vocab(hand)
    assert RunFolder(hand).num_items == 2 and not RunFolder(hand).is_complete()
    with pytest.raises(InputError, match=r"not a complete prepare run folder \(no summary.json\); "
                                         r"prepare it again"):
        RunFolder(hand).require_complete()
    assert not RunFolder(tmp_path / "absent").is_complete()


@pytest.mark.spark
def test_a_prepare_killed_half_way_leaves_a_folder_training_refuses(spark, tmp_path, monkeypatch):
    from srgnn.data import etl
    from srgnn.data.prepare import run_prepare

    rows = [f"s{s},{BASE + 60 * s + k},{item}" for s in range(6) for k, item in enumerate("abc")]
    clicks = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    config = PrepareConfig(min_item_support=1, test_days=0, valid_days=0)
    run_prepare(spark, clicks, str(out), config)
    assert RunFolder(out).is_complete() and not (out / IN_PROGRESS).exists()
    assert not list(out.glob(f".{SUMMARY}*"))  # the summary was renamed into place

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while writing the graphs

    monkeypatch.setattr(etl, "add_graph_columns", killed)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(spark, clicks, str(out), config)  # again, into the same folder
    run = RunFolder(out)
    assert not run.is_complete() and not (out / SUMMARY).exists()  # the old summary is gone
    with pytest.raises(InputError, match="prepare it again"):
        run.num_items
    monkeypatch.undo()
    run_prepare(spark, clicks, str(out), config)
    assert RunFolder(out).is_complete() and RunFolder(out).num_items == 3


@pytest.mark.spark
def test_a_bad_input_leaves_an_earlier_complete_folder_alone(spark, tmp_path):
    from srgnn.data.prepare import run_prepare

    rows = [f"s{s},{BASE + 60 * s + k},{item}" for s in range(4) for k, item in enumerate("ab")]
    clicks = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    config = PrepareConfig(min_item_support=1, test_days=0, valid_days=0)
    run_prepare(spark, clicks, str(out), config)
    bad = write_text(tmp_path / "bad.csv", "session,timestamp,item_id\n1,2,3\n")
    with pytest.raises(InputError, match="missing required column"):
        run_prepare(spark, bad, str(out), config, "csv")
    assert RunFolder(out).is_complete()  # checked before anything was written


@pytest.mark.spark
def test_markers_of_an_output_folder_given_as_a_uri(spark, tmp_path):
    # an out_dir with a scheme goes through Hadoop's file system (as s3a:// or hdfs:// would)
    from srgnn.data.prepare import run_prepare

    rows = [f"s{s},{BASE + 60 * s + k},{item}" for s in range(3) for k, item in enumerate("ab")]
    clicks = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "remote"
    out.mkdir()
    (out / SUMMARY).write_text("{}")  # an earlier run's
    run_prepare(spark, clicks, out.as_uri(), PrepareConfig(min_item_support=1, test_days=0, valid_days=0))
    assert not (out / IN_PROGRESS).exists() and (out / SUMMARY).is_dir()  # Spark's text output
    assert RunFolder(out).is_complete()


def test_raw_examples_of_a_large_split_come_back_as_one_list_array(tmp_path):
    """Millions of prefix clicks: pyarrow converts a numpy string array that large in several
    chunks, which a list array cannot take as its values."""
    import numpy as np

    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(pa.table({"item_id": ["item-0001", "item-0002"], "item_index": pa.array([1, 2], pa.int32()),
                             "train_clicks": pa.array([3, 1], pa.int64())}), run / "vocab.parquet")
    examples, length = 1_000_000, 3  # 3,000,000 prefix clicks in raw ids
    prefix = pa.ListArray.from_arrays(
        pa.array(np.arange(0, examples * length + 1, length, dtype=np.int32)),
        pa.array(np.tile(np.array([1, 2, 1], dtype=np.int32), examples)))
    (run / "graphs" / "test").mkdir(parents=True)
    pq.write_table(pa.table({"prefix": prefix, "target": pa.array(np.full(examples, 2, np.int32)),
                             "prefix_length": pa.array(np.full(examples, length, np.int32))}),
                   run / "graphs" / "test" / "part-0.parquet")
    prefixes, targets, lengths = RunFolder(run).raw_examples("test")
    assert len(prefixes) == examples and prefixes.offsets[-1].as_py() == examples * length
    assert prefixes[0].as_py() == prefixes[examples - 1].as_py() == ["item-0001", "item-0002", "item-0001"]
    assert set(targets) == {"item-0002"} and set(lengths) == {length}
