"""Session transforms (the "transform" step): pure DataFrame -> DataFrame functions.

Each function takes its settings as arguments and starts no job of its own, so each can be
tested alone on a few inline rows. The order used by :mod:`srgnn.data.prepare` follows the
reference SR-GNN preprocessing:

1. :func:`sessionize`: one row per session, clicks ordered by (timestamp, input order),
   exact duplicate events removed;
2. :func:`drop_short_sessions`: sessions with fewer than ``min_length`` clicks;
3. :func:`drop_rare_items`: items with fewer than ``min_support`` clicks, then
   :func:`drop_short_sessions` again;
4. :func:`assign_split`: train / valid / test by the day of the session's last click;
5. :func:`build_vocab` from the training window (train and valid sessions);
   :func:`index_sessions` maps items to 1..N and removes items unseen there from test sessions
   (then :func:`drop_short_sessions` once more);
6. :func:`prefix_examples` and :func:`add_graph_columns`: every prefix predicts its next item
   (a prefix keeps at most the last ``max_prefix_length`` clicks before its target, so the
   examples of a session grow linearly with its length), with the session graph built by
   :func:`srgnn.data.graph.build_graphs`.

Session frames carry ``session_id`` and ``events``: ``array<struct<ts, item_id>>`` in click
order (after :func:`index_sessions`: ``items array<int>`` plus ``start_ts``/``end_ts``).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from srgnn.data.graph import build_graphs, click_gaps, graphs_to_arrow
from srgnn.data.ragged import counts_to_offsets, from_arrow, to_arrow

SPLITS = ("train", "valid", "test")


def sessionize(clicks: DataFrame, last_category: bool = False) -> DataFrame:
    """Group clicks into sessions ordered by time, removing exact duplicate events.

    Input: ``session_id, ts, item_id, user_id, event_type, _seq``. Output: ``session_id,
    events array<struct<ts timestamp, item_id string>>, raw_clicks int, user_id string`` where
    ``raw_clicks`` counts the clicks before duplicates were removed and ``user_id`` is the
    first known user of the session in click order (null for an anonymous session). Ties on
    ``ts`` keep input order (``_seq``). Two events are duplicates when session, time, item,
    user and event type are all equal; the first one is kept. With ``last_category`` the input
    also has ``category`` and the output adds ``last_category string``, the category of the
    session's last click.
    """
    # Sorted by the event and then input order, a duplicate directly follows the event's first
    # occurrence: one comparison with the previous element finds it (sorts and a linear pass,
    # however long the session).
    key = ("ts", "item_id", "user_id", "event_type")
    carried = ("category",) if last_category else ()
    grouped = clicks.groupBy("session_id").agg(
        F.sort_array(F.collect_list(F.struct(*key, "_seq", *carried))).alias("_ev"))

    def first_of_its_kind(event, i):
        previous = F.col("_ev")[i - 1]
        same = F.lit(True)
        for name in key:
            same = same & event[name].eqNullSafe(previous[name])
        return (i == 0) | ~same

    kept = F.filter("_ev", first_of_its_kind)
    in_time_order = F.sort_array(F.transform(kept, lambda e: F.struct(
        e["ts"].alias("ts"), e["_seq"].alias("_seq"), e["item_id"].alias("item_id"),
        *[e[name].alias(name) for name in carried])))
    extra = [F.element_at(in_time_order, -1)["category"].alias("last_category")] if last_category else []
    # The clicks' users in time order (``_ev`` is sorted by time too); the first known one.
    users = F.filter(F.transform("_ev", lambda e: e["user_id"]), lambda u: u.isNotNull())
    return grouped.select(
        "session_id",
        F.transform(in_time_order, lambda e: F.struct(e["ts"].alias("ts"), e["item_id"].alias("item_id"))).alias("events"),
        F.size("_ev").alias("raw_clicks"),
        F.when(F.size(users) > 0, users[0]).alias("user_id"),
        *extra,
    )


def return_labels(sessions: DataFrame, horizon_days: int, data_end) -> DataFrame:
    """``session_id, returns`` of the sessions with a ``user_id``: whether the user comes back
    within ``horizon_days``.

    ``returns`` is 1 when the user's next session (by first click, ties by session id) starts
    at most ``horizon_days`` days after this session's last click; 0 when it does not and
    ``data_end`` (the input's last click, a ``datetime``) lies at least ``horizon_days`` days
    after this session's last click; null otherwise, for a session whose horizon runs past the
    end of the input (a return there could not be seen yet). Anonymous sessions get no row.
    Input: :func:`sessionize`'s output (``session_id, events, user_id``), every session, the
    short ones too: a one-click visit is still a return.
    """
    from pyspark.sql.window import Window

    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}.")
    visits = sessions.where(F.col("user_id").isNotNull()).select(
        "session_id", "user_id",
        F.element_at("events", 1)["ts"].alias("start_ts"),
        F.element_at("events", -1)["ts"].alias("end_ts"))
    # The user's next session in order of start (ties: the session id).
    following = F.lead("start_ts").over(Window.partitionBy("user_id").orderBy("start_ts", "session_id"))
    deadline = F.col("end_ts") + F.expr(f"INTERVAL {int(horizon_days)} DAYS")
    returns = (F.when(F.col("_next").isNotNull() & (F.col("_next") <= deadline), F.lit(1))
               .when(deadline <= F.lit(data_end), F.lit(0)))
    return (visits.withColumn("_next", following)
            .select("session_id", returns.cast("int").alias("returns")))


def drop_short_sessions(sessions: DataFrame, min_length: int, column: str = "events") -> DataFrame:
    """Keep sessions with at least ``min_length`` clicks."""
    return sessions.where(F.size(column) >= min_length)


def item_counts(sessions: DataFrame) -> DataFrame:
    """``item_id, clicks``: how often each item is clicked in the given sessions."""
    return (sessions.select(F.explode("events").alias("e"))
            .groupBy(F.col("e.item_id").alias("item_id")).agg(F.count(F.lit(1)).alias("clicks")))


# Item lookups (rare items, the vocabulary) run inside Spark's Python workers on whole Arrow
# batches against a broadcast list of ids: no explode / join / regroup shuffle of the clicks.
# Each worker process builds its hash index once per broadcast and keeps it.
_WORKER_INDEX: dict = {}


def _broadcast_ids(frame: DataFrame, ids: list):
    """(key, broadcast) of a list of ids; the key names this list in the workers' cache."""
    import uuid

    return uuid.uuid4().hex, frame.sparkSession.sparkContext.broadcast(ids)


def _worker_index(shared):
    import pandas as pd

    key, broadcast = shared
    index = _WORKER_INDEX.get(key)
    if index is None:
        _WORKER_INDEX.clear()
        index = _WORKER_INDEX[key] = pd.Index(broadcast.value, dtype=object)
    return index


def _lookup_batches(shared, build):
    """A mapInArrow body: every click's item looked up in the broadcast id list (its position
    there, -1 when absent), then ``build(batch, events, flat_events, parents, positions)``
    makes the output batch; ``parents`` is the row of every click."""
    def run(batches):
        import numpy as np
        import pyarrow.compute as pc

        index = _worker_index(shared)
        for batch in batches:
            events = batch.column("events")
            flat = pc.list_flatten(events)
            parents = np.asarray(pc.list_parent_indices(events), dtype=np.int64)
            items = flat.field("item_id").to_numpy(zero_copy_only=False)
            positions = index.get_indexer(items) if len(items) else np.zeros(0, dtype=np.int64)
            yield build(batch, events, flat, parents, positions)
    return run


def _kept_offsets(parents, keep, num_rows: int):
    """int32 offsets of the kept clicks per row (rows keep their order; clicks theirs)."""
    import numpy as np

    return counts_to_offsets(np.bincount(parents[keep], minlength=num_rows), dtype=np.int32)


def _without_items(batch, events, flat, parents, positions):
    import pyarrow as pa

    keep = positions < 0
    kept = pa.ListArray.from_arrays(pa.array(_kept_offsets(parents, keep, batch.num_rows)),
                                    flat.filter(pa.array(keep)), type=events.type)
    return pa.RecordBatch.from_arrays([batch.column("session_id"), kept], names=["session_id", "events"])


def drop_rare_items(sessions: DataFrame, min_support: int) -> DataFrame:
    """Remove clicks on items with fewer than ``min_support`` clicks in ``sessions``.

    Sessions keep their click order; a session may become shorter or empty (the caller drops
    short sessions afterwards, as the reference preprocessing does). Runs one aggregation to
    find the rare items; when there are none the sessions are returned as they are.
    """
    if min_support <= 1:
        return sessions
    rare = [r["item_id"] for r in item_counts(sessions).where(F.col("clicks") < min_support).collect()]
    if not rare:
        return sessions
    frame = sessions.select("session_id", "events")
    return frame.mapInArrow(_lookup_batches(_broadcast_ids(frame, rare), _without_items), frame.schema)


def session_end_day(events_col: str = "events"):
    """Column: the UTC date of the session's last click."""
    return F.to_date(F.element_at(F.col(events_col), -1)["ts"])


def assign_split(sessions: DataFrame, last_day, test_days: int, valid_days: int) -> DataFrame:
    """Add ``split``: test = last click in the last ``test_days`` days up to ``last_day``
    (inclusive), valid = the ``valid_days`` days before that, train = everything earlier.

    ``last_day`` is a ``datetime.date`` (the latest session end over the whole input).
    """
    end = session_end_day()
    test_start = F.date_sub(F.lit(last_day), test_days - 1) if test_days > 0 else None
    valid_start = F.date_sub(F.lit(last_day), test_days + valid_days - 1)
    split = F.lit("train")
    if valid_days > 0:
        split = F.when(end >= valid_start, F.lit("valid")).otherwise(split)
    if test_days > 0:
        split = F.when(end >= test_start, F.lit("test")).otherwise(split)
    return sessions.withColumn("split", split)


def build_vocab(train_sessions: DataFrame) -> DataFrame:
    """Item vocabulary from the training window's sessions: ``item_id, item_index (1..N),
    train_clicks``.

    Indices follow decreasing popularity in those sessions (ties by raw id), so index 1 is the most
    clicked item; 0 is reserved for padding.
    """
    from pyspark.sql.window import Window

    counts = item_counts(train_sessions).withColumnRenamed("clicks", "train_clicks")
    order = Window.orderBy(F.col("train_clicks").desc(), F.col("item_id"))
    return counts.select(
        "item_id",
        F.row_number().over(order).cast("int").alias("item_index"),
        F.col("train_clicks").cast("long"),
    )


def _with_indices(batch, events, flat, parents, positions):
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    index = positions + 1
    keep = index > 0
    offsets = _kept_offsets(parents, keep, batch.num_rows)
    ts = flat.field("ts").filter(pa.array(keep))
    has = np.diff(offsets) > 0
    first = pa.array(np.where(has, offsets[:-1], 0))
    last = pa.array(np.where(has, offsets[1:] - 1, 0))
    mask = pa.array(~has)
    start = pc.if_else(mask, pa.scalar(None, ts.type), ts.take(first)) if len(ts) else pa.nulls(batch.num_rows, ts.type)
    end = pc.if_else(mask, pa.scalar(None, ts.type), ts.take(last)) if len(ts) else pa.nulls(batch.num_rows, ts.type)
    items_list = to_arrow(index[keep].astype(np.int32), offsets)
    indexed_from = pa.array(np.diff(np.asarray(events.offsets)).astype(np.int32))
    return pa.RecordBatch.from_arrays(
        [batch.column("session_id"), batch.column("split"), items_list, start, end, indexed_from,
         to_arrow(_click_gaps(ts, offsets), offsets, pa.float32())],
        names=["session_id", "split", "items", "start_ts", "end_ts", "indexed_from", "gaps"])


def _click_gaps(ts, offsets):
    """float32 seconds from the previous kept click of the session to each kept click (0 for
    a session's first): :func:`srgnn.data.graph.click_gaps` of the Arrow timestamps."""
    import numpy as np
    import pyarrow as pa

    micros = np.asarray(ts.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False),
                        dtype=np.int64)
    return click_gaps(micros.astype("datetime64[us]"), offsets)


def index_sessions(sessions: DataFrame, vocab: DataFrame) -> DataFrame:
    """Map every click to its vocabulary index; clicks on unknown items are removed.

    Output: ``session_id, split, items array<int>, start_ts, end_ts, indexed_from int,
    gaps array<float>`` (``indexed_from`` = clicks before unknown items were removed; the
    timestamps are those of the first and last kept click; ``gaps``: seconds from the previous
    kept click to each kept click, 0 for the first). The vocabulary (collected once, ordered by index) is
    broadcast to the Python workers, which map whole Arrow batches: no shuffle.
    """
    ids = [r["item_id"] for r in vocab.orderBy("item_index").select("item_id").collect()]
    frame = sessions.select("session_id", "split", "events")
    schema = T.StructType([
        T.StructField("session_id", T.StringType()), T.StructField("split", T.StringType()),
        T.StructField("items", T.ArrayType(T.IntegerType())),
        T.StructField("start_ts", T.TimestampType()), T.StructField("end_ts", T.TimestampType()),
        T.StructField("indexed_from", T.IntegerType()),
        T.StructField("gaps", T.ArrayType(T.FloatType())),
    ])
    return frame.mapInArrow(_lookup_batches(_broadcast_ids(frame, ids), _with_indices), schema)


def prefix_examples(sessions: DataFrame, max_prefix_length: int | None = None) -> DataFrame:
    """SR-GNN data augmentation: a session ``[v1..vn]`` gives ``n - 1`` examples
    ``([v1..vk], v(k+1))`` for ``k = 1..n-1``.

    With ``max_prefix_length`` ``N``, a prefix keeps only the last ``N`` clicks before its
    target, ``[v(k-N+1)..vk]`` when ``k > N``; every target stays an example. Input
    ``session_id, split, items`` and optionally ``gaps`` (:func:`index_sessions`) and
    ``returns`` (:func:`return_labels`); output ``session_id, split, prefix, target,
    prefix_length`` (the length kept), ``remaining`` (the session's clicks after the target,
    ``n - k - 1``), with ``gaps`` ``prefix_gaps`` (the prefix clicks' gaps) and with
    ``returns`` the session's ``returns`` on every example.
    """
    if max_prefix_length is not None and max_prefix_length < 1:
        raise ValueError(f"max_prefix_length must be at least 1, got {max_prefix_length}.")

    def example(k):
        if max_prefix_length is None:
            start, length = F.lit(1), k
        else:
            start = F.greatest(F.lit(1), k - max_prefix_length + 1)
            length = F.least(k, F.lit(max_prefix_length))
        gaps = [F.slice("gaps", start, length).alias("prefix_gaps")] if timed else []
        return F.struct(F.slice("items", start, length).alias("prefix"),
                        F.element_at("items", k + 1).alias("target"),
                        length.cast("int").alias("prefix_length"),
                        (F.size("items") - k - 1).cast("int").alias("remaining"), *gaps)

    timed = "gaps" in sessions.columns

    # The examples are built inside the session's row and then exploded, so that no example
    # row carries the whole session (which would copy n clicks for each of its n examples).
    examples = F.transform(F.sequence(F.lit(1), F.size("items") - 1), example)
    labelled = ["returns"] if "returns" in sessions.columns else []
    return (sessions.where(F.size("items") >= 2)
            .select("session_id", "split", *labelled, F.explode(examples).alias("e"))
            .select("session_id", "split", "e.prefix", "e.target", "e.prefix_length",
                    "e.remaining", *(["e.prefix_gaps"] if timed else []), *labelled))


GRAPH_FIELDS = ("nodes", "alias", "edge_src", "edge_dst")


def _graph_batches(batches):
    """mapInArrow body: add the graph columns to each Arrow batch of examples."""
    import pyarrow as pa

    import numpy as np

    for batch in batches:
        gaps = (from_arrow(batch.column("prefix_gaps"), np.float32)[0]
                if "prefix_gaps" in batch.schema.names else None)
        graphs = graphs_to_arrow(build_graphs(*from_arrow(batch.column("prefix")), gaps))
        arrays = [batch.column(name) for name in batch.schema.names]
        names = list(batch.schema.names)
        for name in GRAPH_FIELDS + (("edge_gap",) if gaps is not None else ()):
            arrays.append(graphs[name])
            names.append(name)
        yield pa.RecordBatch.from_arrays(arrays, names=names)


def add_graph_columns(examples: DataFrame) -> DataFrame:
    """Add ``nodes, alias, edge_src, edge_dst`` (see docs/contracts.md) to prefix examples,
    and ``edge_gap`` (``array<float>``) when they have ``prefix_gaps``.

    Runs :func:`srgnn.data.graph.build_graphs` on whole Arrow batches inside Spark's Python
    workers (``mapInArrow``): no per-row Python.
    """
    examples = examples.withColumn("prefix", F.col("prefix").cast(T.ArrayType(T.IntegerType())))
    schema = T.StructType(examples.schema.fields + [
        T.StructField(name, T.ArrayType(T.IntegerType())) for name in GRAPH_FIELDS])
    if "prefix_gaps" in examples.columns:
        schema = schema.add(T.StructField("edge_gap", T.ArrayType(T.FloatType())))
    return examples.mapInArrow(_graph_batches, schema)
