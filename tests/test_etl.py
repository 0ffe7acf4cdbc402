"""Session transforms on small hand-made frames."""

import datetime as dt

import pytest

from srgnn.data import etl

pytestmark = pytest.mark.spark

T0 = dt.datetime(2024, 3, 1, 12, 0, 0)


def clicks_frame(spark, rows):
    """rows: (session_id, seconds after T0, item_id[, event_type]) in input order."""
    data = [(r[0], T0 + dt.timedelta(seconds=r[1]), r[2], None, r[3] if len(r) > 3 else None, i)
            for i, r in enumerate(rows)]
    return spark.createDataFrame(
        data, "session_id string, ts timestamp, item_id string, user_id string, event_type string, _seq long")


def sessions_frame(spark, sessions, day_of=None):
    """sessions: {session_id: [items]} one click a minute; day_of: {session_id: day offset}."""
    data = []
    for sid, items in sessions.items():
        start = T0 + dt.timedelta(days=(day_of or {}).get(sid, 0))
        data.append((sid, [(start + dt.timedelta(minutes=k), item) for k, item in enumerate(items)]))
    return spark.createDataFrame(data, "session_id string, events array<struct<ts timestamp, item_id string>>")


def as_lists(frame, column="events"):
    out = {}
    for row in frame.collect():
        value = row[column]
        out[row["session_id"]] = [e["item_id"] for e in value] if column == "events" else list(value)
    return out


def test_sessionize_orders_by_time_then_input_order_and_drops_exact_duplicates(spark):
    frame = clicks_frame(spark, [
        ("s", 30, "c"),
        ("s", 10, "a"),
        ("s", 20, "b"),
        ("s", 20, "x"),        # same time as b, later in the input: after b
        ("s", 10, "a"),        # exact duplicate of the second row
        ("s", 10, "a", "cart"),  # same click with another event type: not a duplicate
        ("t", 5, "z"),
    ])
    out = etl.sessionize(frame)
    assert as_lists(out) == {"s": ["a", "a", "b", "x", "c"], "t": ["z"]}
    assert {r["session_id"]: r["raw_clicks"] for r in out.collect()} == {"s": 6, "t": 1}


def test_rare_item_filter_then_short_sessions(spark):
    sessions = sessions_frame(spark, {
        "1": ["a", "b", "a"],
        "2": ["a", "c"],
        "3": ["c", "b", "d"],
        "4": ["d", "e"],
    })
    # supports: a=3, b=2, c=2, d=2, e=1
    filtered = etl.drop_rare_items(sessions, min_support=2)
    assert as_lists(filtered) == {"1": ["a", "b", "a"], "2": ["a", "c"], "3": ["c", "b", "d"], "4": ["d"]}
    filtered = etl.drop_rare_items(sessions, min_support=3)
    assert as_lists(filtered) == {"1": ["a", "a"], "2": ["a"], "3": [], "4": []}
    assert as_lists(etl.drop_short_sessions(filtered, 2)) == {"1": ["a", "a"]}


def test_split_by_day_of_last_click(spark):
    days = {"old": 0, "v1": 8, "v2": 9, "t1": 10, "t2": 11}
    sessions = sessions_frame(spark, {sid: ["a", "b"] for sid in days}, day_of=days)
    last_day = (T0 + dt.timedelta(days=11)).date()
    out = {r["session_id"]: r["split"] for r in etl.assign_split(sessions, last_day, 2, 2).collect()}
    assert out == {"old": "train", "v1": "valid", "v2": "valid", "t1": "test", "t2": "test"}
    out = {r["session_id"]: r["split"] for r in etl.assign_split(sessions, last_day, 0, 1).collect()}
    assert out == {"old": "train", "v1": "train", "v2": "train", "t1": "train", "t2": "valid"}


def test_vocab_from_train_and_unseen_items_removed(spark):
    sessions = sessions_frame(spark, {"1": ["a", "b", "a"], "2": ["b", "c"], "9": ["a", "z", "c", "z"]})
    from pyspark.sql import functions as F

    sessions = sessions.withColumn("split", F.when(F.col("session_id") == "9", "test").otherwise("train"))
    vocab = etl.build_vocab(sessions.where(F.col("split") == "train"))
    # a: 2 clicks, b: 2, c: 1 -> by popularity, ties by id
    assert sorted((r["item_index"], r["item_id"], r["train_clicks"]) for r in vocab.collect()) == [
        (1, "a", 2), (2, "b", 2), (3, "c", 1)]
    indexed = etl.index_sessions(sessions, vocab)
    rows = {r["session_id"]: (list(r["items"]), r["indexed_from"]) for r in indexed.collect()}
    assert rows == {"1": ([1, 2, 1], 3), "2": ([2, 3], 2), "9": ([1, 3], 4)}


def test_prefix_examples_and_graph_columns_of_the_seed_example(spark):
    sessions = spark.createDataFrame([("s", "train", [1, 2, 3, 2]), ("r", "train", [5, 5])],
                                     "session_id string, split string, items array<int>")
    examples = etl.add_graph_columns(etl.prefix_examples(sessions))
    got = sorted((r["session_id"], list(r["prefix"]), r["target"], r["prefix_length"], list(r["nodes"]),
                  list(r["alias"]), list(zip(r["edge_src"], r["edge_dst"]))) for r in examples.collect())
    assert got == [
        ("r", [5], 5, 1, [5], [0], []),
        ("s", [1], 2, 1, [1], [0], []),
        ("s", [1, 2], 3, 2, [1, 2], [0, 1], [(0, 1)]),
        ("s", [1, 2, 3], 2, 3, [1, 2, 3], [0, 1, 2], [(0, 1), (1, 2)]),
    ]
    # the full session A->B->C->B is only ever a prefix when followed by another click
    longer = spark.createDataFrame([("s", "train", [1, 2, 3, 2, 4])], "session_id string, split string, items array<int>")
    last = [r for r in etl.add_graph_columns(etl.prefix_examples(longer)).collect() if r["prefix_length"] == 4][0]
    assert (list(last["nodes"]), list(last["alias"]), list(zip(last["edge_src"], last["edge_dst"])), last["target"]) == (
        [1, 2, 3], [0, 1, 2, 1], [(0, 1), (1, 2), (2, 1)], 4)


def test_prefixes_keep_the_last_clicks_of_a_window(spark):
    sessions = spark.createDataFrame([("s", "train", [1, 2, 3, 4, 5, 6]), ("r", "train", [7, 8])],
                                     "session_id string, split string, items array<int>")
    got = sorted((r["session_id"], r["prefix_length"], list(r["prefix"]), r["target"])
                 for r in etl.prefix_examples(sessions, max_prefix_length=3).collect())
    assert got == [
        ("r", 1, [7], 8),
        ("s", 1, [1], 2),
        ("s", 2, [1, 2], 3),
        ("s", 3, [1, 2, 3], 4),
        ("s", 3, [2, 3, 4], 5),  # every target stays an example; its prefix is cut to 3 clicks
        ("s", 3, [3, 4, 5], 6),
    ]
    # a window longer than the session changes nothing
    full = sorted((r["session_id"], list(r["prefix"])) for r in etl.prefix_examples(sessions).collect())
    wide = sorted((r["session_id"], list(r["prefix"]))
                  for r in etl.prefix_examples(sessions, max_prefix_length=100).collect())
    assert wide == full and len(full) == 6
    with pytest.raises(ValueError, match="max_prefix_length"):
        etl.prefix_examples(sessions, max_prefix_length=0)
