"""Elementwise steps on a continuous column: log, log1p, asinh, logit, standardise, clamp."""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from flashsim.transforms.base import (
    _EXP_MAX,
    _REQUIRED,
    TRANSFORMS,
    Transform,
    _first_bad,
    _logit,
    _sigmoid,
)

__all__ = ["Log", "Log1p", "Asinh", "Logit", "Standardize", "Clamp"]



@TRANSFORMS.register
class Log(Transform):
    """y = log(x + offset); needs x + offset > 0."""

    type = "log"
    params = {"offset": 0.0}

    @override
    def _check_domain(self, x, ref):
        bad = ~(x + self.offset > 0)
        if bad.any():
            raise self._err(f"log needs x + offset > 0 (offset={self.offset}), got {_first_bad(x, bad)}")

    @override
    def _forward(self, x, ref, rng):
        return np.log(x + self.offset)

    @override
    def _inverse(self, y, ref):
        return np.exp(np.minimum(y, _EXP_MAX)) - self.offset


@TRANSFORMS.register
class Log1p(Transform):
    """y = log(1 + x); needs x > -1."""

    type = "log1p"

    @override
    def _check_domain(self, x, ref):
        bad = ~(x > -1)
        if bad.any():
            raise self._err(f"log1p needs x > -1, got {_first_bad(x, bad)}")

    @override
    def _forward(self, x, ref, rng):
        return np.log1p(x)

    @override
    def _inverse(self, y, ref):
        return np.expm1(np.minimum(y, _EXP_MAX))


@TRANSFORMS.register
class Asinh(Transform):
    """y = asinh((x + offset) / scale): log-like on both signs, for heavy-tailed signed values
    (impact parameters); with ``offset = -t`` and a small scale it magnifies the region around a
    threshold t (a sharp efficiency turn-on in a conditioning column)."""

    type = "asinh"
    params = {"scale": 1.0, "offset": 0.0}

    def _check_params(self):
        if not self.scale > 0:
            raise self._err(f"asinh needs scale > 0, got {self.scale}")

    @override
    def _forward(self, x, ref, rng):
        return np.arcsinh((x + self.offset) / self.scale)

    @override
    def _inverse(self, y, ref):
        return np.sinh(np.clip(y, -_EXP_MAX, _EXP_MAX)) * self.scale - self.offset


@TRANSFORMS.register
class Logit(Transform):
    """y = logit((x - lo) / (hi - lo)) on the declared closed range [lo, hi].

    Values at the bounds are mapped to ``eps`` inside them (finite logit) and snapped back
    to the bound on inverse, so the round trip is exact on the whole range.
    """

    type = "logit"
    params = {"lo": _REQUIRED, "hi": _REQUIRED, "eps": 1e-6}

    def _check_params(self):
        self.lo, self.hi, self.eps = float(self.lo), float(self.hi), float(self.eps)
        if not self.hi > self.lo:
            raise self._err(f"needs hi > lo, got lo={self.lo}, hi={self.hi}")
        if not 0 < self.eps < 0.5:
            raise self._err(f"needs 0 < eps < 0.5, got {self.eps}")

    @override
    def _check_domain(self, x, ref):
        bad = (x < self.lo) | (x > self.hi)
        if bad.any():
            raise self._err(f"value outside the declared range [{self.lo}, {self.hi}]: {_first_bad(x, bad)}")

    @override
    def _forward(self, x, ref, rng):
        return _logit(np.clip((x - self.lo) / (self.hi - self.lo), self.eps, 1 - self.eps))

    @override
    def _inverse(self, y, ref):
        u = _sigmoid(y)
        x = self.lo + (self.hi - self.lo) * u
        x = np.where(u <= self.eps * (1 + 1e-6), self.lo, x)
        x = np.where(u >= 1 - self.eps * (1 + 1e-6), self.hi, x)
        return np.clip(x, self.lo, self.hi)


@TRANSFORMS.register
class Standardize(Transform):
    """y = (x - mean) / std with mean and std fitted (std of a constant column is 1)."""

    type = "standardize"
    fitted = ("mean", "std")

    @override
    def _fit(self, x, ref):
        self.mean = float(np.mean(x))
        std = float(np.std(x))
        self.std = std if std > 0 and np.isfinite(std) else 1.0

    @override
    def _forward(self, x, ref, rng):
        return (x - self.mean) / self.std

    @override
    def _inverse(self, y, ref):
        return y * self.std + self.mean




@TRANSFORMS.register
class Clamp(Transform):
    """Identity on forward; clip to the fitted (or declared) range on inverse.

    Put it first in a chain so that it acts last on inverse, in the original space.
    ``lo``/``hi`` override the fitted bounds; ``margin`` widens the fitted range by that
    fraction of its width.
    """

    type = "clamp"
    params = {"lo": None, "hi": None, "margin": 0.0}
    fitted = ("min", "max")

    @override
    def _fit(self, x, ref):
        lo, hi = float(x.min()), float(x.max())
        pad = float(self.margin) * (hi - lo)
        self.min = float(self.lo) if self.lo is not None else lo - pad
        self.max = float(self.hi) if self.hi is not None else hi + pad

    @override
    def _forward(self, x, ref, rng):
        return x.copy()

    @override
    def _inverse(self, y, ref):
        return np.clip(np.nan_to_num(y, nan=self.min), self.min, self.max)
