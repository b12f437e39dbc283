"""Joint steps on several columns: fractions summing to at most one, a vector residual, one
tagger's class scores, a length relative to two others, a total never below its part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from typing_extensions import override

from flashsim.errors import TransformError
from flashsim.transforms.base import (
    _EXP_MAX,
    MULTI_TRANSFORMS,
    MultiColumnTransform,
    _as_float,
    _first_bad,
)

__all__ = ["StickBreaking", "PolarResidual", "FlavourScores", "HypotRatio", "Excess"]



@MULTI_TRANSFORMS.register
class StickBreaking(MultiColumnTransform):
    """Fractions f_1..f_k >= 0 with sum <= 1 -> stick pieces v_j = f_j / (1 - sum_{i<j} f_i) in [0, 1].

    The inverse f_j = v_j * prod_{i<j} (1 - v_i) (v clipped to [0, 1]) gives sum f = 1 - prod(1 - v)
    <= 1 by construction. When the stick is used up (remaining 0) the piece is 0.
    Input sums may exceed 1 by at most ``tolerance`` (rounding in stored fractions).
    """

    type = "stick_breaking"
    options = ("tolerance",)

    def __init__(self, columns: Sequence[str], tolerance: float = 1e-3, **params: Any):
        super().__init__(columns, **params)
        self.tolerance = float(tolerance)
        if not 0 <= self.tolerance < 0.5:
            raise TransformError(f"columns {self.columns}: stick_breaking tolerance must be in [0, 0.5), got {tolerance}")

    def _check(self, xs: list[np.ndarray]) -> np.ndarray:
        if len(xs) != len(self.columns):
            raise TransformError(f"columns {self.columns}: stick_breaking got {len(xs)} columns")
        f = np.stack([_as_float(x) for x in xs], axis=1)
        for j, c in enumerate(self.columns):
            col = f[:, j]
            bad = ~np.isfinite(col) | (col < 0) | (col > 1 + self.tolerance)
            if bad.any():
                raise TransformError(f"column {c!r}, step 'stick_breaking': fraction outside [0, 1]: {_first_bad(col, bad)}")
        s = f.sum(axis=1)
        bad = s > 1 + self.tolerance
        if bad.any():
            raise TransformError(
                f"columns {self.columns}, step 'stick_breaking': fractions sum above 1: {_first_bad(s, bad)}"
            )
        return f

    @override
    def forward(self, xs, refs):
        f = self._check(xs)
        remaining = np.ones(f.shape[0])
        out = []
        for j in range(f.shape[1]):
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(remaining > 0, f[:, j] / remaining, 0.0)
            v = np.clip(v, 0.0, 1.0)
            out.append(v)
            remaining = np.maximum(remaining - f[:, j], 0.0)
        return out

    @override
    def inverse(self, ys, refs):
        remaining = np.ones(len(ys[0]))
        out = []
        for y in ys:
            v = np.clip(np.nan_to_num(_as_float(y), nan=0.0), 0.0, 1.0)
            out.append(v * remaining)
            remaining = remaining * (1.0 - v)
        return out

    def to_dict(self):
        return {"type": self.type, "tolerance": self.tolerance}


@MULTI_TRANSFORMS.register
class PolarResidual(MultiColumnTransform):
    """(pt, phi) -> (px - ref_px, py - ref_py): a vector's residual from a reference vector.

    For MET: ``reference = ["GenMET.pt", "GenMET.phi"]`` gives the x/y mismeasurement, which is
    what the upstream reco-minus-gen momentum of jets and muons adds to, in the lab frame.
    """

    type = "polar_residual"
    options = ("reference",)

    def __init__(self, columns: Sequence[str], reference: Sequence[str] | None = None, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 2:
            raise TransformError(f"columns {self.columns}: polar_residual takes two columns, [pt, phi]")
        if not isinstance(reference, (list, tuple)) or len(reference) != 2 or not all(isinstance(r, str) for r in reference):
            raise TransformError(f"columns {self.columns}: polar_residual needs reference = [pt column, phi column], got {reference!r}")
        self.reference = list(reference)

    @property
    def references(self) -> list[str]:
        return list(self.reference)

    def forward(self, xs, refs):
        pt, phi = (_as_float(x) for x in xs)
        bad = ~np.isfinite(pt) | (pt < 0) | ~np.isfinite(phi)
        if bad.any():
            raise TransformError(f"columns {self.columns}, step 'polar_residual': pt < 0 or non-finite: {_first_bad(pt, bad)}")
        rpt, rphi = (_as_float(r) for r in refs)
        return [pt * np.cos(phi) - rpt * np.cos(rphi), pt * np.sin(phi) - rpt * np.sin(rphi)]

    def inverse(self, ys, refs):
        rpt, rphi = (_as_float(r) for r in refs)
        px = _as_float(ys[0]) + rpt * np.cos(rphi)
        py = _as_float(ys[1]) + rpt * np.sin(rphi)
        return [np.hypot(px, py), np.arctan2(py, px)]

    def to_dict(self):
        return {"type": self.type, "reference": list(self.reference)}


@MULTI_TRANSFORMS.register
class FlavourScores(MultiColumnTransform):
    """[B, CvB, CvL] of one multiclass tagger (DeepJet) -> [CvB, CvL]; B follows from the other two.

    The class probabilities b + c + udsg sum to one, so B = (1 - CvB) CvL / (CvB + CvL - CvB CvL).
    The logits of CvB and CvL are the tagger's own log-ratios log(c/b) and log(c/udsg), well resolved
    where B is near 1; modelling only these keeps the flow off a 2-D sheet in 3-D. A jet with no
    score has the default in all three; the inverse gives it wherever CvB or CvL is drawn at it.
    """

    type = "flavour_scores"
    options = ("default", "tolerance")

    def __init__(self, columns: Sequence[str], default: float = -1.0, tolerance: float = 0.01, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 3:
            raise TransformError(f"columns {self.columns}: flavour_scores takes three columns, [B, CvB, CvL]")
        self.default, self.tolerance = float(default), float(tolerance)
        if not 0 < self.tolerance < 0.5:
            raise TransformError(f"columns {self.columns}: flavour_scores tolerance must be in (0, 0.5), got {tolerance}")

    @property
    def outputs(self) -> list[str]:
        return self.columns[1:]

    @staticmethod
    def _b(cvb: np.ndarray, cvl: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num((1 - cvb) * cvl / (cvb + cvl - cvb * cvl), nan=0.5)

    @override
    def forward(self, xs, refs):
        b, cvb, cvl = (_as_float(x) for x in xs)
        scored = b != self.default
        for c, x in zip(self.columns, (b, cvb, cvl)):
            bad = ~np.isfinite(x) | (scored & ((x < 0) | (x > 1))) | (~scored & (x != self.default))
            if bad.any():
                raise TransformError(f"column {c!r}, step 'flavour_scores': not a score in [0, 1] "
                                 f"(or the default {self.default} where B has it): {_first_bad(x, bad)}")
        bad = scored & (np.abs(self._b(cvb, cvl) - b) > self.tolerance)
        if bad.any():
            raise TransformError(f"column {self.columns[0]!r}, step 'flavour_scores': B differs from (1 - CvB) CvL / "
                             f"(CvB + CvL - CvB CvL) by more than {self.tolerance} (not one multiclass tagger's scores): "
                             f"{_first_bad(b, bad)}")
        return [cvb, cvl]

    @override
    def inverse(self, ys, refs):
        cvb, cvl = (_as_float(y) for y in ys)
        none = (cvb == self.default) | (cvl == self.default)
        b = self._b(np.clip(cvb, 0.0, 1.0), np.clip(cvl, 0.0, 1.0))
        return [np.where(none, self.default, x) for x in (b, cvb, cvl)]

    def to_dict(self):
        return {"type": self.type, "default": self.default, "tolerance": self.tolerance}


@MULTI_TRANSFORMS.register
class HypotRatio(MultiColumnTransform):
    """[x, y, r] -> [x, y, log(r / hypot(x, y))]: a length relative to the hypotenuse of two others.

    For a muon's ip3d against its dxy and dz, the log-ratio is narrow around 0 (exactly 0, within
    ``tolerance``, where the three are one vector's components), which a ``spike`` step at 0 can take.
    """

    type = "hypot_ratio"
    options = ("tolerance",)

    def __init__(self, columns: Sequence[str], tolerance: float = 1e-4, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 3:
            raise TransformError(f"columns {self.columns}: hypot_ratio takes three columns, [x, y, length]")
        self.tolerance = float(tolerance)
        if not 0 <= self.tolerance < 0.1:
            raise TransformError(f"columns {self.columns}: hypot_ratio tolerance must be in [0, 0.1), got {tolerance}")

    @override
    def forward(self, xs, refs):
        x, y, r = (_as_float(v) for v in xs)
        h = np.hypot(x, y)
        bad = ~np.isfinite(h) | ~np.isfinite(r) | (r <= 0) | (h <= 0)
        if bad.any():
            raise TransformError(f"column {self.columns[2]!r}, step 'hypot_ratio': needs a length > 0 and "
                             f"{self.columns[0]!r}, {self.columns[1]!r} not both 0: {_first_bad(r, bad)}")
        ratio = np.log(r / h)
        return [x, y, np.where(np.abs(ratio) <= self.tolerance, 0.0, ratio)]

    @override
    def inverse(self, ys, refs):
        x, y, ratio = (_as_float(v) for v in ys)
        return [x, y, np.hypot(x, y) * np.exp(np.clip(ratio, -_EXP_MAX, _EXP_MAX))]

    def to_dict(self):
        return {"type": self.type, "tolerance": self.tolerance}


@MULTI_TRANSFORMS.register
class Excess(MultiColumnTransform):
    """[part, total] -> [part, total - part]: a total that is never below its part (an isolation sum and its
    charged share), drawn as the part and a non-negative excess, so that total >= part by construction.

    The excess is exactly 0 where the rest is (a rho-corrected neutral sum clipped at 0), which a ``spike``
    step at 0 takes; excesses down to ``-tolerance`` (float rounding) count as 0, the inverse clips at 0.
    """

    type = "excess"
    options = ("tolerance",)

    def __init__(self, columns: Sequence[str], tolerance: float = 1e-5, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 2:
            raise TransformError(f"columns {self.columns}: excess takes two columns, [part, total]")
        self.tolerance = float(tolerance)
        if not self.tolerance >= 0:
            raise TransformError(f"columns {self.columns}: excess tolerance must be >= 0, got {tolerance}")

    @override
    def forward(self, xs, refs):
        part, total = (_as_float(v) for v in xs)
        excess = total - part
        bad = ~np.isfinite(excess) | (excess < -self.tolerance * np.maximum(1.0, np.abs(total)))
        if bad.any():
            raise TransformError(f"column {self.columns[1]!r}, step 'excess': needs {self.columns[1]!r} >= "
                                 f"{self.columns[0]!r}, got an excess of {_first_bad(excess, bad)}")
        return [part, np.maximum(excess, 0.0)]

    @override
    def inverse(self, ys, refs):
        part, excess = (_as_float(v) for v in ys)
        return [part, part + np.maximum(excess, 0.0)]

    def to_dict(self):
        return {"type": self.type, "tolerance": self.tolerance}
