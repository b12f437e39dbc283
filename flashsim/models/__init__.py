"""Model types behind one interface (see :mod:`flashsim.models.base`).

``build_model({"type": "maf_rqs" | "coupling_rqs" | "mean_quantile" | "efficiency", ...}, n_targets, n_context)``
"""

from flashsim.models.base import MODELS, PRECISIONS, ConditionalModel, SamplingError, build_model, check_model_config, precision_dtype
from flashsim.models.efficiency import EfficiencyModel
from flashsim.models.flows import CouplingRQS, MafRQS
from flashsim.models.mean_quantile import MeanQuantile
from flashsim.models.serialize import load_model, model_paths, save_model

__all__ = [
    "MODELS",
    "PRECISIONS",
    "ConditionalModel",
    "SamplingError",
    "build_model",
    "check_model_config",
    "precision_dtype",
    "EfficiencyModel",
    "CouplingRQS",
    "MafRQS",
    "MeanQuantile",
    "load_model",
    "model_paths",
    "save_model",
]
