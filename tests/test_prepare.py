"""The prepare job end to end: outputs, contracts and click accounting."""

import csv
import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from srgnn.config import PrepareConfig
from srgnn.data.prepare import run_prepare

from conftest import write_text

pytestmark = pytest.mark.spark

DAY = 86_400
BASE = 1_700_006_400  # 2023-11-15 00:00:00 UTC


def test_prepare_small_log_accounts_for_every_click(spark, tmp_path):
    # day 0..2 train, day 3 valid, day 4 test; x is rare (1 click), q only appears in test.
    lines = ["session_id,timestamp,item_id"]
    def add(sid, day, items):
        for k, item in enumerate(items):
            lines.append(f"{sid},{BASE + day * DAY + 60 * k},{item}")
    add("a", 0, "abc")
    add("b", 1, "bcab")
    add("c", 2, "ca")
    add("d", 2, "d")            # single click
    add("e", 2, "ax")           # x rare -> e becomes too short
    add("f", 3, "abca")         # valid
    add("g", 4, "aqb")          # test, q unseen in the training window
    add("h", 4, "qq")           # test, nothing left after q is removed
    lines.append(f"a,{BASE},a")   # exact duplicate of a's first click
    lines += ["broken,line", f",{BASE},a", f"z,{BASE},"]
    path = write_text(tmp_path / "clicks.csv", "\n".join(lines) + "\n")

    out = tmp_path / "run"
    result = run_prepare(spark, path, str(out), PrepareConfig(min_item_support=2, test_days=1, valid_days=1))
    s = result.summary
    assert s["clicks_read"] == 25
    assert s["clicks_quarantined"] == 3
    assert s["quarantine_reasons"] == {"malformed_row": 1, "missing_session_id": 1, "missing_item_id": 1}
    assert s["clicks_removed"] == {"duplicate_events": 1, "short_sessions": 1, "rare_items": 1,
                                   "short_after_rare_items": 1, "unseen_items": 3,
                                   "short_after_unseen_items": 0}
    assert s["clicks_kept"] == 15
    assert s["balanced"]
    no_cut = {"prefixes_cut": 0, "prefix_clicks_cut": 0}
    assert s["splits"]["train"] == {"sessions": 3, "clicks": 9, "examples": 6,
                                    "examples_before_unseen_filter": 6, **no_cut}
    assert s["splits"]["valid"] == {"sessions": 1, "clicks": 4, "examples": 3,
                                    "examples_before_unseen_filter": 3, **no_cut}
    assert s["splits"]["test"] == {"sessions": 1, "clicks": 2, "examples": 1,
                                   "examples_before_unseen_filter": 3, **no_cut}
    assert s["examples_lost_to_unseen_items"] == 2
    assert (s["prefixes_cut"], s["prefix_clicks_cut"]) == (0, 0)
    assert not (out / "_PREPARING").exists()
    assert json.loads((out / "summary.json").read_text()) == s

    vocab = pq.read_table(out / "vocab.parquet").to_pylist()
    assert [(v["item_id"], v["item_index"]) for v in vocab] == [("a", 1), ("b", 2), ("c", 3)]
    test = pq.read_table(out / "graphs" / "test").to_pylist()
    assert [(r["session_id"], r["prefix"], r["target"]) for r in test] == [("g", [1], 2)]
    train = pq.read_table(out / "graphs" / "train")
    assert train.schema.names == ["session_id", "prefix", "nodes", "alias", "edge_src", "edge_dst",
                                  "target", "prefix_length", "edge_gap", "remaining", "returns"]
    rows = {(r["session_id"], r["prefix_length"]): r for r in train.to_pylist()}
    b3 = rows[("b", 3)]  # b c a -> next b
    assert (b3["prefix"], b3["nodes"], b3["alias"], b3["target"]) == ([2, 3, 1], [1, 2, 3], [1, 2, 0], 2)
    assert list(zip(b3["edge_src"], b3["edge_dst"])) == [(1, 2), (2, 0)]
    assert (b3["edge_gap"], b3["remaining"]) == ([60.0, 60.0], 0)  # a click a minute
    assert [rows[("b", n)]["remaining"] for n in (1, 2)] == [2, 1]
    sessions = pq.read_table(out / "sessions" / "valid").to_pylist()
    assert [(r["session_id"], r["items"]) for r in sessions] == [("f", [1, 2, 3, 1])]
    quarantine = pq.read_table(out / "quarantine").to_pylist()
    assert sorted(r["raw"] for r in quarantine if r["reason"] == "malformed_row") == ["broken,line"]


def test_vocabulary_covers_the_validation_days_but_not_the_test_days(spark, tmp_path):
    # v first appears in the validation day; q only in the test day. A model refitted on train +
    # valid must be able to recommend v, and v in a test session must survive indexing.
    lines = ["session_id,timestamp,item_id"]
    for sid, day, items in [("s1", 0, "ab"), ("s2", 0, "ba"), ("s3", 1, "cv"), ("s4", 1, "vcv"),
                            ("s5", 2, "av"), ("s6", 2, "qv")]:
        lines += [f"{sid},{BASE + day * DAY + 60 * k},{item}" for k, item in enumerate(items)]
    path = write_text(tmp_path / "clicks.csv", "\n".join(lines) + "\n")
    out = tmp_path / "run"
    s = run_prepare(spark, path, str(out), PrepareConfig(min_item_support=1, test_days=1, valid_days=1)).summary
    vocab = pq.read_table(out / "vocab.parquet").to_pylist()
    # clicks in the window: v 3, a 2, b 2, c 2 (ties by raw id); q none
    assert [(v["item_id"], v["item_index"], v["train_clicks"]) for v in vocab] == [
        ("v", 1, 3), ("a", 2, 2), ("b", 3, 2), ("c", 4, 2)]
    test = pq.read_table(out / "graphs" / "test").to_pylist()
    assert sorted((r["session_id"], r["prefix"], r["target"]) for r in test) == [("s5", [2], 1)]
    assert s["clicks_removed"]["unseen_items"] == 1  # q
    assert s["clicks_removed"]["short_after_unseen_items"] == 1  # s6 left with v alone
    assert s["balanced"]


def reference_counts(path, min_support, test_days, valid_days):
    """The reference preprocessing rules, written out plainly on the raw Diginetica file."""
    sessions = {}
    with open(path, newline="") as handle:
        for order, row in enumerate(csv.DictReader(handle, delimiter=";")):
            day = dt.date.fromisoformat(row["eventdate"])
            key = (day, int(row["timeframe"]), order)
            sessions.setdefault(row["session_id"], []).append((key, row["item_id"], row["user_id"]))
    clean = {}
    for sid, clicks in sessions.items():
        seen, items = set(), []
        for key, item, user in sorted(clicks):
            if (key[:2], item, user) not in seen:
                seen.add((key[:2], item, user))
                items.append((key[0], item))
        clean[sid] = items
    long = {s: c for s, c in clean.items() if len(c) >= 2}
    support = Counter(item for c in long.values() for _, item in c)
    kept = {s: [x for x in c if support[x[1]] >= min_support] for s, c in long.items()}
    kept = {s: c for s, c in kept.items() if len(c) >= 2}
    last = max(c[-1][0] for c in kept.values())
    def split_of(c):
        age = (last - c[-1][0]).days
        return "test" if age < test_days else "valid" if age < test_days + valid_days else "train"
    by_split = {"train": {}, "valid": {}, "test": {}}
    for s, c in kept.items():
        by_split[split_of(c)][s] = [item for _, item in c]
    # the training window: train and valid days (the test days never add items)
    vocab = {item for name in ("train", "valid") for c in by_split[name].values() for item in c}
    out = {"vocab": len(vocab), "rare_removed": sum(len(c) for c in long.values()) - sum(
        len([x for x in c if support[x[1]] >= min_support]) for c in long.values())}
    for name, group in by_split.items():
        mapped = [[i for i in c if i in vocab] for c in group.values()]
        mapped = [c for c in mapped if len(c) >= 2]
        out[name] = (len(mapped), sum(len(c) - 1 for c in mapped))
    return out


def test_diginetica_sample_counts_follow_the_reference_rules(spark, shared_data, tmp_path):
    path = shared_data / "diginetica-sample-train-item-views.csv"
    result = run_prepare(spark, str(path), str(tmp_path / "run"), PrepareConfig(min_item_support=5))
    s = result.summary
    expected = reference_counts(path, 5, 7, 7)
    assert s["format"] == "diginetica"
    assert s["clicks_read"] == 12_391
    assert s["sessions_read"] == 2_986
    assert s["sessions_removed"]["short_sessions"] == 2_986 - 2_053
    assert s["clicks_removed"]["rare_items"] == expected["rare_removed"]
    assert s["vocab_size"] == expected["vocab"]
    for name in ("train", "valid", "test"):
        assert (s["splits"][name]["sessions"], s["splits"][name]["examples"]) == expected[name], name
    assert s["balanced"]
    assert s["prefixes_cut"] == 0  # Diginetica's sessions are shorter than the prefix window


def test_a_long_session_gives_linear_prefix_clicks(spark, tmp_path):
    # one 2,000-click (bot) session: every target stays an example, each prefix keeps <= 100 clicks
    n, window = 2_000, 100
    rows = [f"bot,{BASE + k},i{k % 50}" for k in range(n)]
    path = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    config = PrepareConfig(min_item_support=1, test_days=0, valid_days=0, max_prefix_length=window)
    s = run_prepare(spark, path, str(out), config).summary
    graphs = pq.read_table(out / "graphs" / "train", columns=["prefix", "prefix_length", "target"])
    lengths = graphs.column("prefix_length").to_pylist()
    assert len(lengths) == s["examples"] == n - 1
    assert sum(lengths) == sum(len(p) for p in graphs.column("prefix").to_pylist()) <= n * window
    assert max(lengths) == window
    cut = n - 1 - window  # prefixes k = 101 .. 1999
    assert (s["prefixes_cut"], s["prefix_clicks_cut"]) == (cut, cut * (cut + 1) // 2)
    assert s["splits"]["train"]["prefixes_cut"] == cut
    assert sum(lengths) + s["prefix_clicks_cut"] == n * (n - 1) // 2  # what the full prefixes held
    assert s["balanced"] and s["clicks_kept"] == n


def test_latin1_items_stay_distinct_with_their_encoding_and_are_quarantined_without(spark, tmp_path):
    lines = ["session_id,timestamp,item_id"]
    for s in range(4):
        lines += [f"s{s},{BASE + 60 * s + k},{item}"
                  for k, item in enumerate(["café", "cafè", "tea", "milk"])]
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    config = PrepareConfig(min_item_support=1, test_days=0, valid_days=0)
    right = run_prepare(spark, str(path), str(tmp_path / "right"), config, encoding="latin-1").summary
    vocab = {r["item_id"] for r in pq.read_table(tmp_path / "right" / "vocab.parquet").to_pylist()}
    assert vocab == {"café", "cafè", "tea", "milk"} and right["clicks_quarantined"] == 0
    wrong = run_prepare(spark, str(path), str(tmp_path / "wrong"), config).summary  # read as UTF-8
    assert wrong["quarantine_reasons"] == {"bad_encoding": 8}
    vocab = {r["item_id"] for r in pq.read_table(tmp_path / "wrong" / "vocab.parquet").to_pylist()}
    assert vocab == {"tea", "milk"} and wrong["balanced"]  # nothing merged, nothing altered
    quarantine = pq.read_table(tmp_path / "wrong" / "quarantine").to_pylist()
    assert all(r["reason"] == "bad_encoding" and "\ufffd" in r["raw"] for r in quarantine)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "srgnn.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_reports_user_mistakes_in_one_line(tmp_path):
    missing = run_cli("prepare", "--clicks", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope.csv'}: no such file or folder"
    bad = write_text(tmp_path / "bad.csv", "session,timestamp,item_id\n1,2,3\n")
    result = run_cli("prepare", "--clicks", bad, "--format", "csv")
    assert result.returncode == 1
    assert "missing required column(s) session_id" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    clicks = write_text(tmp_path / "ok.csv", "session_id,timestamp,item_id\n1,2,3\n")
    floor = run_cli("train", "--clicks", clicks, "--lr-floor", "-0.1", "--test-days", "0",
                    env={"SRGNN_HOME": str(tmp_path / "home")})
    assert floor.returncode == 2 and "lr_floor must be at least 0, not -0.1" in floor.stderr
    assert "Traceback" not in floor.stderr and not (tmp_path / "home").exists()


def test_cli_reports_a_truncated_gzip_file_in_one_line_before_spark_starts(tmp_path):
    import gzip

    data = gzip.compress(b"session_id,timestamp,item_id\n" + b"s1,1700000000,i1\n" * 5_000)
    path = tmp_path / "day.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    env = {"SRGNN_HOME": str(tmp_path / "home")}
    for args in (("prepare", "--clicks", str(path), "--out", str(tmp_path / "run")),
                 ("score", "--clicks", str(path), "--ds", "2023-11-14")):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, result.stderr[-2000:]
        assert result.stderr.strip() == (
            f"error: {path}: the gzip stream is truncated or corrupt "
            "(Compressed file ended before the end-of-stream marker was reached)")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_command_with_spark_exits_with_its_output_and_results_complete(tmp_path):
    rows = [f"s{s},{1700000000 + 60 * i + 3600 * s},{(s + i) % 4}" for s in range(12) for i in range(3)]
    clicks = write_text(tmp_path / "clicks.csv", "session_id,timestamp,item_id\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = run_cli("prepare", "--clicks", clicks, "--out", str(out), "--min-item-support", "1",
                     "--test-days", "0", "--valid-days", "0", env={"SRGNN_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "examples" in result.stdout  # the summary, flushed before the process ended
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["sessions"] == 12


def test_cli_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("prepare", "generate", "demo"):
        assert command in result.stdout
