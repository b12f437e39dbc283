"""Per-variable preprocessing with exact inverses.

A *target* is a dict of named 1-D numpy columns (``{"pt": ..., "jetId": ...}``); optional
*reference* columns (``refs``) hold the gen value a target is compared to (gen pt for reco pt).
Each column gets a chain of elementary transforms (log, logit, ratio to the reference,
standardise, dequantise, categorical, spike, clamp ...) configured by plain dicts, as written
in a unit's TOML::

    [[targets]]
    column = "pt"
    steps = [{type = "log_ratio", reference = "pt"}, {type = "standardize"}]

    [[targets]]
    column = "jetId"
    steps = [{type = "categorical", values = [0, 2, 6]}, {type = "standardize"}]

    [[targets]]
    columns = ["chHEF", "neHEF", "chEmEF", "neEmEF", "muEF"]
    steps = [{type = "stick_breaking"}, {type = "spike", values = [0.0, 1.0]},
             {type = "logit", lo = -0.001, hi = 1.001}, {type = "standardize"}]

:class:`TargetPipeline` fits the chains, maps the columns to a float32 array for the model
(``forward``), maps model samples back to columns with their original dtypes (``inverse``)
and serialises to JSON-able dicts (no pickle). :class:`ContextPipeline` is the same thing
for conditioning columns, with deterministic (noise-free) forward.
"""

from flashsim.transforms.base import (
    MULTI_TRANSFORMS,
    TRANSFORMS,
    MultiColumnTransform,
    Transform,
    transform_from_config,
)
from flashsim.transforms.continuous import Asinh, Clamp, Log, Log1p, Logit, Standardize
from flashsim.transforms.discrete import Categorical, Dequantize, Score, Spike
from flashsim.transforms.fitted import CutLevelResidual, LogitResidual
from flashsim.transforms.joint import (
    Excess,
    FlavourScores,
    HypotRatio,
    PolarResidual,
    StickBreaking,
)
from flashsim.transforms.pipeline import ContextPipeline, TargetPipeline
from flashsim.transforms.relative import Difference, LogRatio, PhiDifference, Ratio

__all__ = [
    "Transform", "MultiColumnTransform", "TRANSFORMS", "MULTI_TRANSFORMS", "transform_from_config",
    "Log", "Log1p", "Asinh", "Logit", "Standardize", "Clamp",
    "Ratio", "LogRatio", "Difference", "PhiDifference",
    "Dequantize", "Categorical", "Spike", "Score", "LogitResidual", "CutLevelResidual",
    "StickBreaking", "PolarResidual", "FlavourScores", "HypotRatio", "Excess",
    "TargetPipeline", "ContextPipeline",
]
