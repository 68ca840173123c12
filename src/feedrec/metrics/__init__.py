"""Metrics as pure functions (numpy in, float out), each tested against a naive reference."""

from feedrec.metrics.classification import expected_calibration_error, log_loss, roc_auc_score
from feedrec.metrics.ranking import (
    catalog_coverage,
    f1_at_k,
    hit_matrix,
    hit_rate_at_k,
    intra_list_diversity,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)

__all__ = [
    "catalog_coverage",
    "expected_calibration_error",
    "f1_at_k",
    "hit_matrix",
    "hit_rate_at_k",
    "intra_list_diversity",
    "log_loss",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "roc_auc_score",
]
