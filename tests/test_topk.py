"""Top-K over large catalogues: bounded memory of the exact path, the approximate index (exact
when every list is probed, recall on clustered embeddings, the auto switch) and its recall in
the scoring summary."""

import numpy as np
import pytest
import torch

from srgnn.config import Settings
from srgnn.data.vocab import Vocabulary
from srgnn.model.network import SRGNN, ModelConfig
from srgnn.serving.ann import ItemIndex, choose_nprobe, default_nlist, recall_hits
from srgnn.serving.models import resolve_model
from srgnn.serving.predict import SCORE_MEMORY, Scorer
from srgnn.serving.recommender import Recommender

from conftest import write_text


def random_prefixes(num_items: int, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 6, size=count)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return rng.integers(1, num_items + 1, size=offsets[-1]), offsets


def clustered_model(num_items: int, hidden_size: int = 16, clusters: int = 40, seed: int = 0):
    """A model whose item embeddings form clusters of Zipf-distributed sizes."""
    torch.manual_seed(seed)
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=hidden_size))
    rng = np.random.default_rng(seed)
    share = 1 / np.arange(1, clusters + 1)
    label = rng.choice(clusters, size=num_items, p=share / share.sum())
    centres = rng.standard_normal((clusters, hidden_size))
    items = centres[label] + 0.35 * rng.standard_normal((num_items, hidden_size))
    with torch.no_grad():
        model.embedding.weight[1:] = torch.as_tensor(items, dtype=torch.float32)
    return model


def brute_force_top_k(model, values, offsets, k):
    """Top-k by scoring the whole catalogue at once (the reference of these tests)."""
    from srgnn.data.graph import build_graphs
    from srgnn.model.batching import collate

    with torch.inference_mode():
        scores = model(collate(build_graphs(values, offsets)))  # (S, N)
        top = torch.topk(scores, k, dim=1)
    return top.values.numpy(), top.indices.numpy() + 1


def test_exact_scoring_never_holds_a_prefixes_by_catalogue_matrix():
    """200k items, 1000 prefixes a batch: every block of scores fits the memory budget."""
    torch.manual_seed(0)
    num_items = 200_000
    model = SRGNN(ModelConfig(num_items=num_items, hidden_size=8))
    scorer = Scorer(model, precision="float32", batch_size=1000)
    blocks = []
    score_items = model.score_items

    def recorded(session, start=0, stop=None):
        out = score_items(session, start, stop)
        blocks.append(tuple(out.shape))
        return out

    model.score_items = recorded
    values, offsets = random_prefixes(num_items, 1000)
    top = scorer.top_k(values, offsets, k=20)
    assert blocks, "the exact path scored no block"
    assert max(rows * columns for rows, columns in blocks) * 4 <= SCORE_MEMORY
    assert max(columns for _, columns in blocks) < num_items
    assert sum(columns for rows, columns in blocks if rows == 1000) == num_items
    model.score_items = score_items
    _, expected = brute_force_top_k(model, values[: offsets[50]], offsets[:51], 20)
    np.testing.assert_array_equal(top.items[:50], expected)


def test_the_chunk_follows_the_memory_budget():
    model = SRGNN(ModelConfig(num_items=10, hidden_size=4))
    assert Scorer(model, batch_size=1000, score_memory=64 * 2**20).item_chunk_size == 16_777
    assert Scorer(model, batch_size=100, score_memory=8 * 2**20).item_chunk_size == 20_971
    assert Scorer(model, batch_size=10**6).item_chunk_size == 1024  # never fewer columns
    assert Scorer(model, item_chunk_size=7).item_chunk_size == 7


def test_every_list_probed_gives_the_exact_top_k():
    torch.manual_seed(1)
    model = SRGNN(ModelConfig(num_items=3000, hidden_size=16))
    values, offsets = random_prefixes(3000, 400, seed=1)
    exact_scores, exact_items = brute_force_top_k(model, values, offsets, 10)
    scorer = Scorer(model, precision="float32", topk_index="ivf", nprobe=10**6, recall_sample=0)
    top = scorer.top_k(values, offsets, k=10)
    assert scorer.approximate and scorer.topk_report()["nprobe"] == default_nlist(3000) > 1
    assert top.items.min() >= 1  # never the padding row
    np.testing.assert_allclose(top.scores, exact_scores, rtol=1e-5, atol=1e-5)
    # same items wherever neighbouring scores are not within rounding of each other
    distinct = np.abs(np.diff(exact_scores, axis=1)).min(axis=1) > 1e-4
    assert distinct.sum() > 300
    np.testing.assert_array_equal(top.items[distinct], exact_items[distinct])


def test_the_index_reaches_the_recall_target_on_clustered_embeddings():
    rng = np.random.default_rng(2)
    model = clustered_model(20_000, hidden_size=32, clusters=60, seed=2)
    items = model.embedding.weight[1:].detach().numpy()
    queries = items[rng.integers(0, 20_000, size=(1200, 3))].mean(axis=1)
    queries += 0.2 * rng.standard_normal(queries.shape).astype(np.float32)
    exact = np.argsort(-(queries @ items.T), axis=1)[:, :20]
    index = ItemIndex(items)
    nprobe, tuned = choose_nprobe(index, queries[:600], exact[:600], target=0.95)
    assert tuned >= 0.95 and nprobe < index.nlist // 4  # reached while probing few lists
    _, found = index.search(queries[600:], 20, nprobe)
    held_out = recall_hits(found, exact[600:]).sum() / exact[600:].size
    assert held_out >= 0.93


def test_scorer_reports_the_recall_it_measured_and_keeps_it_honest():
    model = clustered_model(8000, hidden_size=16, seed=3)
    values, offsets = random_prefixes(8000, 3000, seed=3)
    _, exact_items = brute_force_top_k(model, values, offsets, 20)
    scorer = Scorer(model, precision="float32", topk_index="ivf", recall_target=0.9,
                    recall_sample=500, batch_size=1000)
    top = scorer.top_k(values, offsets, k=20)
    report = scorer.topk_report()
    assert report["topk_index"] == "ivf" and report["recall_sessions"] == 500
    assert report["nprobe_chosen_on"] == 500 and report["recall_when_chosen"] >= 0.9
    assert report["nprobe"] < report["nlist"]
    # the 1000 sample prefixes (choosing + measuring) got exact answers, the others the index's
    hits = recall_hits(top.items, exact_items)
    assert (hits == 20).sum() >= 1000
    overall = hits.sum() / exact_items.size
    assert overall < 1.0
    # the recall reported is the index's on the other 2000, near enough
    assert abs(overall - (1000 + 2000 * report["recall"]) / 3000) < 0.03


def test_auto_uses_the_index_above_the_threshold(tmp_path):
    model = SRGNN(ModelConfig(num_items=300, hidden_size=8))
    assert Scorer(model, topk_index="auto", approximate_above=299).approximate
    assert not Scorer(model, topk_index="auto", approximate_above=300).approximate
    assert not Scorer(model).approximate  # exact unless asked: evaluation, pyfunc
    vocabulary = Vocabulary(np.array([f"i{j}" for j in range(1, 301)], dtype=object),
                            np.arange(301))
    Recommender(Scorer(model), vocabulary).save(tmp_path / "model")
    settings = Settings(home=tmp_path, topk_index="auto", approximate_above=200)
    recommender, _ = resolve_model(settings, str(tmp_path / "model"))
    assert recommender.ranker.approximate
    assert recommender.topk_report()["topk_index"] == "ivf"
    evaluated, _ = resolve_model(settings, str(tmp_path / "model"), topk_index="exact")
    assert evaluated.topk_report() == {"topk_index": "exact", "items": 300}
    above, _ = resolve_model(Settings(home=tmp_path), str(tmp_path / "model"))
    assert not above.ranker.approximate  # default threshold: far above 300 items


def test_faiss_threads_follow_torch_threads():
    import faiss

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        index = ItemIndex(np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32))
        index.search(np.ones((3, 8), dtype=np.float32), 5, 2)
        assert faiss.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.spark
def test_the_recall_appears_in_the_scoring_summary(spark, tmp_path):
    from srgnn.serving.score import score_day

    model = clustered_model(3000, seed=4)
    ids = np.array([f"p{j}" for j in range(1, 3001)], dtype=object)
    Recommender(Scorer(model), Vocabulary(ids, np.arange(3001))).save(tmp_path / "model")
    rng = np.random.default_rng(4)
    lines = ["session_id,timestamp,item_id"]
    for session in range(40):
        for click in range(int(rng.integers(1, 5))):
            lines.append(f"s{session},{1714608000 + 60 * click},p{int(rng.integers(1, 3001))}")
    clicks = write_text(tmp_path / "clicks" / "day.csv", "\n".join(lines) + "\n")
    settings = Settings(home=tmp_path / "home", warehouse_url=f"duckdb:///{tmp_path / 'wh.duckdb'}",
                        topk_index="ivf", recall_sample=20)
    summary = score_day(settings, clicks, "2024-05-02", model_uri=str(tmp_path / "model"),
                        top_k=10, spark=spark)
    topk = summary["topk"]
    assert topk["topk_index"] == "ivf" and topk["recall_at"] == 10
    assert topk["nprobe_chosen_on"] == 20 and topk["recall_sessions"] == 20
    assert 0.0 < topk["recall"] <= 1.0


def test_the_workers_reports_add_up_to_the_runs_recall(tmp_path):
    import json

    from srgnn.serving.rows import merge_topk_reports

    assert merge_topk_reports(tmp_path) == {}
    exact = {"topk_index": "exact", "items": 300}
    (tmp_path / "a-1.json").write_text(json.dumps(exact))
    assert merge_topk_reports(tmp_path) == {**exact, "workers": 1}
    ivf = {"topk_index": "ivf", "items": 300, "nlist": 70, "recall_at": 20, "recall_target": 0.95}
    (tmp_path / "a-1.json").write_text(json.dumps({**ivf, "nprobe": 4, "recall": 0.9,
                                                   "recall_sessions": 100}))
    (tmp_path / "b-7.json").write_text(json.dumps({**ivf, "nprobe": 6, "recall": 0.96,
                                                   "recall_sessions": 300}))
    (tmp_path / "c-2.json").write_text(json.dumps({**ivf, "nprobe": 5, "recall": None,
                                                   "recall_sessions": 0}))  # scored no session
    (tmp_path / "d-3.json").write_text(json.dumps({**ivf, "nprobe": None, "recall": None,
                                                   "recall_sessions": 0}))  # still sampling
    merged = merge_topk_reports(tmp_path)
    # (0.9 * 100 + 0.96 * 300) / 400 = 0.945
    assert merged == {**ivf, "nprobe": [4, 5, 6], "recall": 0.945, "recall_sessions": 400,
                      "workers": 4}


def test_the_executor_function_leaves_its_topk_report(tmp_path, monkeypatch):
    import json

    import pyarrow as pa

    from srgnn.serving import rows

    model = clustered_model(3000, seed=6)
    ids = np.array([f"p{j}" for j in range(1, 3001)], dtype=object)
    Recommender(Scorer(model), Vocabulary(ids, np.arange(3001))).save(tmp_path / "model")
    monkeypatch.setenv("SRGNN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SRGNN_TOPK_INDEX", "ivf")  # what the executors get from the driver
    monkeypatch.setenv("SRGNN_RECALL_SAMPLE", "30")
    monkeypatch.setattr(rows, "_WORKER_MODELS", {})
    rng = np.random.default_rng(6)
    batch = pa.RecordBatch.from_pydict({
        "session_id": [f"s{i}" for i in range(200)],
        "items": [[f"p{int(j)}" for j in rng.integers(1, 3001, size=3)] for _ in range(200)],
        "raw_clicks": [3] * 200})
    score = rows.spark_scorer(str(tmp_path / "model"), None, 10, "srgnn:local",
                              str(tmp_path / "topk"))
    out = pa.Table.from_batches(list(score(iter([batch]))))
    assert out.num_rows == 200 * 10
    [report] = [json.loads(p.read_text()) for p in (tmp_path / "topk").glob("*.json")]
    assert report["topk_index"] == "ivf" and report["recall_sessions"] == 30
    assert rows.merge_topk_reports(tmp_path / "topk")["recall"] == report["recall"]


def test_nprobe_is_chosen_on_the_whole_sample_however_the_sessions_arrive():
    model = clustered_model(8000, hidden_size=16, seed=7)
    values, offsets = random_prefixes(8000, 700, seed=7)
    _, exact_items = brute_force_top_k(model, values, offsets, 20)
    scorer = Scorer(model, precision="float32", topk_index="ivf", recall_target=0.95,
                    recall_sample=200)
    found = []
    for start, stop in ((0, 1), (1, 150), (150, 700)):  # a first call with a single session
        top = scorer.top_k(values[offsets[start]:offsets[stop]],
                           offsets[start:stop + 1] - offsets[start], k=20)
        found.append(top.items)
        if stop <= 200:
            assert scorer.topk_report()["nprobe"] is None  # still sampling: all exact
    report = scorer.topk_report()
    assert report["nprobe_chosen_on"] == 200 and report["recall_when_chosen"] >= 0.95
    assert report["recall_sessions"] == 200 and report["recall"] >= 0.9
    hits = recall_hits(np.concatenate(found), exact_items)
    assert (hits == 20).sum() >= 400  # the sample and the measured sessions are exact
