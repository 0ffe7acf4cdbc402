"""Metrics and the evaluation table against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from srgnn.evaluation import metrics
from srgnn.evaluation.evaluate import evaluate_ranked
from srgnn.evaluation.report import format_table


# -- accuracy at K ----------------------------------------------------------------------------
def test_accuracy_metrics_at_20():
    ranks = np.array([1, 3, 0, 21])  # found first, found third, not found, beyond the cut-off
    assert metrics.hit_rate_at_k(ranks, 20) == pytest.approx(0.5)
    assert metrics.mrr_at_k(ranks, 20) == pytest.approx((1 + 1 / 3) / 4)
    assert metrics.ndcg_at_k(ranks, 20) == pytest.approx((1 + 0.5) / 4)  # 1/log2(4) = 0.5


def test_accuracy_metrics_respect_the_cutoff():
    ranks = np.array([1, 3, 0, 21])
    assert metrics.hit_rate_at_k(ranks, 2) == pytest.approx(0.25)
    assert metrics.mrr_at_k(ranks, 2) == pytest.approx(0.25)
    assert metrics.ndcg_at_k(ranks, 2) == pytest.approx(0.25)
    assert metrics.hit_rate_at_k(ranks, 21) == pytest.approx(0.75)
    assert metrics.mrr_at_k(ranks, 21) == pytest.approx((1 + 1 / 3 + 1 / 21) / 4)


def test_ndcg_of_rank_two():
    assert metrics.ndcg_at_k(np.array([2]), 20) == pytest.approx(1 / math.log2(3))  # 0.6309


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        metrics.hit_rate_at_k(np.array([1]), 0)
    with pytest.raises(ValueError):
        metrics.mrr_at_k(np.array([[1, 2]]), 20)
    with pytest.raises(ValueError):
        metrics.ranks_from_topk(np.array([[1, 2]]), np.array([1, 2]))


def test_empty_input_gives_nan():
    assert math.isnan(metrics.hit_rate_at_k(np.array([], dtype=int), 20))


# -- ranks ------------------------------------------------------------------------------------
def test_ranks_from_topk_lists():
    top_items = np.array([[5, 2, 7], [1, 2, 3], [4, 8, 9]])
    assert metrics.ranks_from_topk(top_items, np.array([7, 6, 4])).tolist() == [3, 0, 1]


def test_ranks_from_score_matrix_items_from_one():
    # column j is item j + 1
    scores = np.array([[0.1, 0.5, 0.3, 0.5], [0.9, 0.2, 0.2, 0.1]])
    # row 0: target item 3 (0.3) is beaten by two 0.5s; row 1: item 3 (0.2) ties item 2 -> only 0.9 is higher
    assert metrics.ranks_from_scores(scores, np.array([3, 3])).tolist() == [3, 2]
    # target item 2 (0.5) tied with item 4: ties go to the target
    assert metrics.ranks_from_scores(scores[:1], np.array([2])).tolist() == [1]


def test_ranks_from_score_matrix_items_from_zero():
    scores = np.array([[-np.inf, 0.2, 0.7, 0.4]])  # column 0 is padding
    assert metrics.ranks_from_scores(scores, np.array([1]), first_item=0).tolist() == [3]


def test_ranks_from_score_matrix_in_torch():
    torch = pytest.importorskip("torch")
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.5], [0.9, 0.2, 0.2, 0.1]])
    ranks = metrics.ranks_from_scores(scores, np.array([3, 1]))
    assert isinstance(ranks, np.ndarray)
    assert ranks.tolist() == [3, 1]


def test_ranks_from_scores_rejects_targets_without_a_column():
    with pytest.raises(ValueError):
        metrics.ranks_from_scores(np.zeros((1, 4)), np.array([5]))  # items 1..4 only
    with pytest.raises(ValueError):
        metrics.ranks_from_scores(np.array([[np.nan, 1.0]]), np.array([1]))


# -- coverage and popularity --------------------------------------------------------------------
def test_coverage():
    top_items = np.array([[1, 2], [2, 3], [0, 2]])  # 0 is padding and does not count
    assert metrics.coverage_at_k(top_items, 5, k=2) == pytest.approx(3 / 5)
    assert metrics.coverage_at_k(top_items, 5, k=1) == pytest.approx(2 / 5)  # items 1 and 2


def test_popularity_percentiles():
    # clicks of items 1..4: 10, 5, 5, 1 -> sorted 1, 5, 5, 10
    percentiles = metrics.popularity_percentiles(np.array([0, 10, 5, 5, 1]))
    assert math.isnan(percentiles[0])
    assert percentiles[1:].tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])  # (1 + 1/2) / 3 = 0.5


def test_popularity_bias():
    popularity = np.array([0, 10, 5, 5, 1])
    top_items = np.array([[1, 2], [4, 1]])
    assert metrics.popularity_bias_at_k(top_items, popularity, k=2) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert metrics.popularity_bias_at_k(top_items, popularity, k=1) == pytest.approx((1 + 0) / 2)


# -- buckets ------------------------------------------------------------------------------------
def test_length_buckets():
    lengths = np.array([1, 2, 3, 4, 5, 6, 10, 11, 40, 0])
    assert metrics.length_bucket_index(lengths).tolist() == [0, 1, 2, 3, 3, 4, 4, 5, 5, -1]
    assert metrics.length_bucket_labels() == ["1", "2", "3", "4-5", "6-10", ">10"]


def test_metric_by_length_bucket():
    lengths = np.array([1, 2, 4, 5, 6, 10, 11, 40])
    ranks = np.array([1, 0, 0, 5, 30, 1, 2, 0])
    hr = metrics.by_length_bucket(metrics.hit_rate_at_k, lengths, ranks, k=20)
    assert list(hr) == ["1", "2", "3", "4-5", "6-10", ">10"]
    assert hr["1"] == (1.0, 1)
    assert hr["2"] == (0.0, 1)
    assert math.isnan(hr["3"][0]) and hr["3"][1] == 0
    assert hr["4-5"] == (0.5, 2)
    assert hr["6-10"] == (0.5, 2)  # rank 30 is beyond K
    assert hr[">10"] == (0.5, 2)
    mrr = metrics.by_length_bucket(metrics.mrr_at_k, lengths, ranks, k=20)
    assert mrr["4-5"][0] == pytest.approx(0.1)  # (0 + 1/5) / 2
    assert mrr[">10"][0] == pytest.approx(0.25)  # (1/2 + 0) / 2


def test_list_metrics_by_length_bucket():
    lengths = np.array([1, 1, 3])
    top_items = np.array([[1, 2], [2, 3], [4, 4]])
    coverage = metrics.by_length_bucket(metrics.coverage_at_k, lengths, top_items, num_items=4, k=2)
    assert coverage["1"] == (0.75, 2)
    assert coverage["3"] == (0.25, 1)


# -- evaluate_ranked and the table ------------------------------------------------------------
def test_evaluate_ranked_hand_values():
    top_items = np.array([[3, 1], [2, 3], [4, 2], [1, 2]])
    targets = np.array([3, 3, 1, 2])  # ranks 1, 2, not found, 2
    lengths = np.array([1, 2, 2, 7])
    popularity = np.array([0, 10, 5, 5, 1])  # percentiles 1, .5, .5, 0
    result = evaluate_ranked(top_items, targets, lengths, popularity, k=2)
    assert result["HR@2"] == pytest.approx(0.75)
    assert result["MRR@2"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert result["NDCG@2"] == pytest.approx((1 + 2 / math.log2(3)) / 4)
    assert result["coverage@2"] == pytest.approx(1.0)
    assert result["popularity_bias@2"] == pytest.approx((0.5 + 1 + 0.5 + 0.5 + 0 + 0.5 + 1 + 0.5) / 8)
    assert result["examples"] == 4
    assert result["by_length"]["2"] == {"HR@2": 0.5, "MRR@2": 0.25, "examples": 2}
    assert result["by_length"]["6-10"]["MRR@2"] == pytest.approx(0.5)


def test_evaluate_ranked_uses_only_the_first_k_columns():
    result = evaluate_ranked(np.array([[1, 2, 3]]), np.array([3]), np.array([1]), np.array([0, 1, 1, 1]), k=2)
    assert result["HR@2"] == 0.0


def test_format_table_lists_every_model():
    popularity = np.array([0, 10, 5, 5, 1])
    results = {
        "alpha_model": evaluate_ranked(np.array([[1, 2]]), np.array([1]), np.array([1]), popularity, k=2),
        "beta_model": evaluate_ranked(np.array([[2, 3]]), np.array([1]), np.array([12]), popularity, k=2),
    }
    results["beta_model"]["fit_s"] = 1.5
    table = format_table(results)
    assert "alpha_model" in table and "beta_model" in table
    assert "HR@2" in table and "MRR@2" in table and "NDCG@2" in table
    assert "popularity_bias@2" in table and "coverage@2" in table
    assert ">10" in table and "4-5" in table
    assert "100.00" in table  # alpha's HR@2
    assert table.count("alpha_model") == 2  # one row in each table
