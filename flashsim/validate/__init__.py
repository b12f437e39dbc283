"""Validation of flashsim output against a reference: metrics, plots and an HTML report.

The headline metric is the noise-floor ratio R = W1(flash, ref_B) / W1(ref_A, ref_B) summed over
random event splits (DESIGN.md, "Measuring fidelity without chasing noise"), beside a classifier
two-sample AUC and the same test between two reference halves.
"""

from flashsim.validate.metrics import (
    NoiseFloorResult,
    classifier_auc,
    classifier_two_sample_test,
    correlation_difference,
    efficiency_profile,
    ks_distance,
    matched_mask,
    noise_floor_ratio,
    noise_floor_ratio_independent,
    response_profile,
    roc_by_flavour,
    wasserstein,
)
from flashsim.validate.report import (
    DEFAULT_THRESHOLDS,
    ValidationInputError,
    gen_efficiency_objects,
    metrics_dataframe,
    validate,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "NoiseFloorResult",
    "ValidationInputError",
    "classifier_auc",
    "classifier_two_sample_test",
    "correlation_difference",
    "efficiency_profile",
    "gen_efficiency_objects",
    "ks_distance",
    "matched_mask",
    "metrics_dataframe",
    "noise_floor_ratio",
    "noise_floor_ratio_independent",
    "response_profile",
    "roc_by_flavour",
    "validate",
    "wasserstein",
]
