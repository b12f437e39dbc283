"""Steps relative to a reference column (the gen value a reco value is compared to)."""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from flashsim.kinematics import wrap_phi
from flashsim.transforms.base import _EXP_MAX, TRANSFORMS, Transform, _first_bad

__all__ = ["Ratio", "LogRatio", "Difference", "PhiDifference"]


@TRANSFORMS.register
class Ratio(Transform):
    """y = x / ref; needs ref != 0."""

    type = "ratio"
    uses_reference = True

    @override
    def _check_domain(self, x, ref):
        bad = ref == 0
        if bad.any():
            raise self._err(f"ratio needs a non-zero reference {self.reference!r}, got {_first_bad(ref, bad)}")

    @override
    def _forward(self, x, ref, rng):
        return x / ref

    def _inverse(self, y, ref):
        return y * ref


@TRANSFORMS.register
class LogRatio(Transform):
    """y = log((x + offset) / ref); needs x + offset > 0 and ref > 0 (pt, mass: the response).

    A negative ``offset`` removes a selection threshold (``offset = -15`` for jets with pt > 15):
    the sharp edge at the threshold becomes a smooth tail, and every sample lands above it.
    """

    type = "log_ratio"
    params = {"offset": 0.0}
    uses_reference = True

    def _check_domain(self, x, ref):
        bad = ~(x + self.offset > 0)
        if bad.any():
            raise self._err(f"log_ratio needs x + offset > 0 (offset={self.offset}), got {_first_bad(x, bad)}")
        bad = ~(ref > 0)
        if bad.any():
            raise self._err(f"log_ratio needs reference {self.reference!r} > 0, got {_first_bad(ref, bad)}")

    @override
    def _forward(self, x, ref, rng):
        return np.log(x + self.offset) - np.log(ref)

    def _inverse(self, y, ref):
        return np.exp(np.minimum(y + np.log(np.maximum(ref, 1e-300)), _EXP_MAX)) - self.offset


@TRANSFORMS.register
class Difference(Transform):
    """y = x - ref (eta)."""

    type = "difference"
    uses_reference = True

    @override
    def _forward(self, x, ref, rng):
        return x - ref

    def _inverse(self, y, ref):
        return y + ref


@TRANSFORMS.register
class PhiDifference(Transform):
    """y = wrap(x - ref) in [-pi, pi); inverse wrap(y + ref) in [-pi, pi)."""

    type = "phi_difference"
    uses_reference = True

    @override
    def _forward(self, x, ref, rng):
        return wrap_phi(x - ref)

    def _inverse(self, y, ref):
        return wrap_phi(y + ref)


