"""The multi-task head's second target, "whether the user returns" (``return_weight``): the
label prepare derives from ``user_id`` (with its return window and the sessions it cannot know
yet), the column it writes, the masked binary cross-entropy, and training's refusal where no
example has a label."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from srgnn.config import PrepareConfig, SettingError, TrainConfig
from srgnn.data.graph import build_graphs, graphs_to_arrow
from srgnn.data.samples import clustered_sessions, expand_prefixes, sessions_to_arrays
from srgnn.model.batching import collate
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.model.reader import GraphParquetReader
from srgnn.training.loop import train

NUM_ITEMS = 40
DAY = 86_400
BASE = 1_767_225_600  # 2026-01-01 00:00:00 UTC


def model_with(seed: int = 0, **options) -> SRGNN:
    torch.manual_seed(seed)
    return SRGNN(ModelConfig(num_items=NUM_ITEMS, hidden_size=8, **options))


def labelled_batch(labels):
    graphs = build_graphs(np.array([1, 2, 3, 2, 4, 5, 6, 7, 1]), np.array([0, 3, 5, 7, 9]))
    return collate(graphs, np.array([4, 5, 6, 2]), returns=np.array(labels, dtype=np.float32))


# ------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------
def test_the_loss_adds_w_times_the_cross_entropy_of_the_known_labels_only():
    batch = labelled_batch([1.0, np.nan, 0.0, 1.0])
    model = model_with(return_weight=0.5)
    reference = model_with()
    reference.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("return_head.")})
    logits = model.return_head(model.session_embedding(batch)).squeeze(1).detach()
    p = torch.sigmoid(logits)
    # by hand over rows 0, 2, 3 (row 1 has no label): -[y log p + (1 - y) log(1 - p)]
    bce = -(math.log(p[0]) + math.log(1 - p[2]) + math.log(p[3])) / 3
    torch.testing.assert_close(model.loss(batch), reference.loss(batch) + 0.5 * torch.tensor(bce))


def test_a_batch_without_labels_adds_nothing_but_keeps_the_head_in_the_graph():
    batch = labelled_batch([np.nan] * 4)
    model = model_with(return_weight=2.0)
    reference = model_with()
    reference.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("return_head.")})
    loss = model.loss(batch)
    torch.testing.assert_close(loss, reference.loss(batch))
    loss.backward()
    assert model.return_head.weight.grad is not None
    assert float(model.return_head.weight.grad.abs().sum()) == 0.0


def test_the_head_exists_only_with_a_weight_and_scores_never_use_it():
    assert model_with().return_head is None
    batch = labelled_batch([1.0, 0.0, 1.0, 0.0])
    model = model_with(return_weight=1.0)
    before = model(batch)
    with torch.no_grad():
        model.return_head.weight.normal_()
    assert torch.equal(model(batch), before)
    with pytest.raises(ValueError, match="returns column"):
        model.return_loss(model.session_embedding(batch), collate(
            build_graphs(np.array([1, 2]), np.array([0, 2])), np.array([3])))
    with pytest.raises(ValueError, match="return_weight must be non-negative"):
        ModelConfig(num_items=3, return_weight=-1.0)
    with pytest.raises(ValueError, match="return_weight must be at least 0"):
        TrainConfig(return_weight=-0.1)


def test_the_head_learns_a_label_that_the_session_s_items_decide():
    # Users whose session holds an item of 1..20 come back, the others do not: the head
    # must separate them from the session vector alone (a known, learnable rule).
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=NUM_ITEMS, num_sessions=300, seed=2))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    first = prefix_values[prefix_offsets[:-1]]
    labels = (first <= 20).astype(np.float32)
    assert 0.2 < labels.mean() < 0.8
    batch = collate(build_graphs(prefix_values, prefix_offsets), targets, returns=labels)
    model = model_with(return_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        model.return_loss(model.session_embedding(batch), batch).backward()
        optimizer.step()
    with torch.no_grad():
        predicted = model.return_head(model.session_embedding(batch)).squeeze(1) > 0
    accuracy = float((predicted.numpy() == labels.astype(bool)).mean())
    assert accuracy > 0.9, accuracy


# ------------------------------------------------------------------------------------------
# The graph column, the reader and training's refusal
# ------------------------------------------------------------------------------------------
def write_graphs(path, returns) -> None:
    values, offsets = sessions_to_arrays(
        clustered_sessions(num_items=NUM_ITEMS, num_sessions=120, seed=5))
    prefix_values, prefix_offsets, targets, _ = expand_prefixes(values, offsets)
    columns = graphs_to_arrow(build_graphs(prefix_values, prefix_offsets))
    columns["target"] = pa.array(targets.astype(np.int32))
    if returns is not None:
        columns["returns"] = pa.array([returns(i) for i in range(len(targets))], pa.int32())
    path.mkdir(parents=True)
    pq.write_table(pa.table(columns), path / "part-0.parquet")


def test_the_reader_gives_nan_for_an_unknown_label(tmp_path):
    write_graphs(tmp_path / "g", lambda i: [1, None, 0][i % 3])
    reader = GraphParquetReader(tmp_path / "g", batch_size=6)
    batch = next(iter(reader))
    assert np.isnan(batch.returns.numpy()[[1, 4]]).all()
    assert batch.returns.numpy()[[0, 2, 3, 5]].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert reader.known_values("returns") == reader.num_examples - reader.num_examples // 3


@pytest.mark.parametrize("returns, message", [
    (None, "returns column.*run srgnn prepare again"),
    (lambda i: None, "no example .* has a return label"),
])
def test_training_refuses_graphs_without_labels(tmp_path, returns, message):
    write_graphs(tmp_path / "g", returns)
    config = TrainConfig(hidden_size=8, epochs=1, progress=False, num_threads=1, return_weight=0.5)
    with pytest.raises(SettingError, match=message):
        train(tmp_path / "g", None, NUM_ITEMS, config)


# ------------------------------------------------------------------------------------------
# Prepare: the label from user_id, and a real run that trains with it
# ------------------------------------------------------------------------------------------
def test_return_labels_follow_the_window_and_know_what_they_cannot_see(spark):
    from srgnn.data import etl

    def session(sid, user, first_day, last_day):
        events = [(dt.datetime(2026, 1, 1) + dt.timedelta(days=d), "i") for d in (first_day, last_day)]
        return (sid, user, events)

    rows = [
        session("a1", "u", 0, 0), session("a2", "u", 5, 5), session("a3", "u", 20, 20),
        session("b1", "v", 0, 1), session("b2", "v", 9, 9),
        session("c1", "w", 2, 2),
        session("d1", None, 0, 0), session("d2", None, 1, 1),
        session("e1", "x", 27, 27), session("e2", "x", 29, 29),
        session("z", "y", 30, 30),
    ]
    sessions = spark.createDataFrame(
        rows, "session_id string, user_id string, events array<struct<ts timestamp, item_id string>>")
    data_end = dt.datetime(2026, 1, 31)
    labels = {r["session_id"]: r["returns"] for r in etl.return_labels(sessions, 7, data_end).collect()}
    # a1 -> a2 after 5 days: returns; a2 -> a3 after 15 days: not; a3 ends 10 days before the
    # end with no later session: not; b1 -> b2 8 days after b1's last click: not; b2, c1: not;
    # anonymous sessions get no row; e1 -> e2 in 2 days: returns although e1 is recent; e2 and
    # z end less than 7 days before the end with no later session: unknown.
    assert labels == {"a1": 1, "a2": 0, "a3": 0, "b1": 0, "b2": 0, "c1": 0,
                      "e1": 1, "e2": None, "z": None}
    with pytest.raises(ValueError, match="horizon_days"):
        etl.return_labels(sessions, 0, data_end)


def test_sessionize_keeps_the_first_known_user(spark):
    from srgnn.data import etl

    ts = dt.datetime(2026, 1, 1)
    clicks = spark.createDataFrame(
        [("s", ts + dt.timedelta(seconds=k), "i", user, None, k)
         for k, user in enumerate([None, "late", "later"])]
        + [("t", ts, "i", None, None, 9)],
        "session_id string, ts timestamp, item_id string, user_id string, event_type string, _seq long")
    users = {r["session_id"]: r["user_id"] for r in etl.sessionize(clicks).collect()}
    assert users == {"s": "late", "t": None}


def test_prepare_writes_the_label_and_training_uses_it(spark, tmp_path):
    from srgnn.data.prepare import run_prepare

    # 60 users, each with sessions every 3 days (returns) or only one session (not): the
    # users with an even number return. Day 40 is the input's last day.
    lines = ["session_id,timestamp,item_id,user_id"]
    expected = {}
    rng = np.random.default_rng(0)
    for user in range(60):
        days = list(range(0, 30, 3)) if user % 2 == 0 else [int(rng.integers(0, 30))]
        for day in days:
            sid = f"u{user}d{day}"
            items = rng.integers(0, 15, size=3) + (0 if user % 2 == 0 else 15)
            lines += [f"{sid},{BASE + day * DAY + 60 * k},{item},user{user}" for k, item in enumerate(items)]
            expected[sid] = 1 if user % 2 == 0 and day + 3 < 30 else 0
    lines += [f"anon{k},{BASE + 40 * DAY + k},{k % 30}," for k in range(2)]
    lines += [f"anon,{BASE + 40 * DAY + 100},1,", f"anon,{BASE + 40 * DAY + 160},2,"]
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    config = PrepareConfig(min_item_support=1, test_days=0, valid_days=0, return_days=7)
    summary = run_prepare(spark, str(path), str(out), config).summary
    # the last session of an even user (day 27) has no session 3 days later: label 0
    assert summary["return_labels"] == {"returns": sum(expected.values()),
                                        "stays": len(expected) - sum(expected.values()),
                                        "unknown": 0, "return_days": 7}
    table = pq.read_table(out / "graphs" / "train", columns=["session_id", "returns"]).to_pylist()
    by_session = {row["session_id"]: row["returns"] for row in table}
    assert by_session["anon"] is None
    assert {s: v for s, v in by_session.items() if s != "anon"} == expected
    result = train(out / "graphs" / "train", None, int(summary["vocab_size"]),
                   TrainConfig(hidden_size=8, epochs=2, progress=False, num_threads=1,
                               batch_size=20, return_weight=1.0))
    assert result.model_config.return_weight == 1.0
    assert "return_weight" in result.model_config.options
    rebuilt = SRGNN(result.model_config)
    rebuilt.load_state_dict(result.best_state_dict)
    batch = next(iter(GraphParquetReader(out / "graphs" / "train", batch_size=400)))
    with torch.no_grad():
        logits = rebuilt.eval().return_head(rebuilt.session_embedding(batch)).squeeze(1)
    known = ~torch.isnan(batch.returns)
    loss = F.binary_cross_entropy_with_logits(logits[known], batch.returns[known])
    assert float(loss) < math.log(2)  # better than a coin: the items tell the two kinds apart


# ------------------------------------------------------------------------------------------
# The generator's users
# ------------------------------------------------------------------------------------------
def test_generated_users_leave_the_anonymous_stream_as_it_was_and_come_back():
    from srgnn.data.synth import SynthConfig, generate_events, generate_events_with_users

    plain = SynthConfig(sessions=2_000, items=200, days=14)
    session, ts, item, user, _ = generate_events_with_users(plain)
    assert (user == -1).all()
    for a, b in zip(generate_events(plain)[:3], (session, ts, item)):
        np.testing.assert_array_equal(a, b)
    session, ts, item, user, _ = generate_events_with_users(
        SynthConfig(sessions=2_000, items=200, days=14, users=300))
    starts = np.r_[0, np.flatnonzero(np.diff(session)) + 1]
    per_session = user[starts]
    # one user per session, about half logged in, and some users with several sessions
    for lo, hi in zip(starts, np.r_[starts[1:], len(session)]):
        assert len(set(user[lo:hi].tolist())) == 1
    assert 0.4 < (per_session >= 0).mean() < 0.6
    counts = np.bincount(per_session[per_session >= 0])
    assert counts.max() >= 10 and (counts == 1).any()


def test_a_generated_log_with_users_prepares_with_every_bad_line_quarantined(spark, tmp_path):
    from srgnn.data.prepare import run_prepare
    from srgnn.data.synth import SynthConfig, write_clickstream

    clicks = tmp_path / "clicks.csv"
    written = write_clickstream(str(clicks), SynthConfig(sessions=1_500, items=150, days=10,
                                                         users=200, bad_share=0.02))
    assert clicks.read_text().startswith("session_id,timestamp,item_id,user_id\n")
    config = PrepareConfig(min_item_support=1, test_days=1, valid_days=1, return_days=2)
    summary = run_prepare(spark, str(clicks), str(tmp_path / "run"), config).summary
    assert summary["clicks_quarantined"] == written.bad_lines
    assert summary["balanced"]
    labels = summary["return_labels"]
    assert labels["returns"] > 0 and labels["stays"] > 0 and labels["unknown"] > 0
