"""A score drawn as its residual from a fit on other drawn columns (an ID's MVA of the shower shape and isolation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from typing_extensions import override

from flashsim import expressions
from flashsim.transforms.base import _REQUIRED, TRANSFORMS, Transform, _first_bad, _logit, _sigmoid

__all__ = ["LogitResidual"]


@TRANSFORMS.register
class LogitResidual(Transform):
    """A score in [lo, hi] that is nearly a function of other columns the unit draws: y = logit of the score minus a
    linear least-squares fit of it on ``inputs`` (expressions of the columns of earlier target entries, such as
    ``"minimum(hoe, 1)"`` or ``"sieie * (abs(eta) < 1.479)"``); the inverse adds the fit of the drawn inputs back, so
    the model draws only what the inputs leave open. A drawn score stays within the training range."""

    type = "logit_residual"
    params = {"lo": _REQUIRED, "hi": _REQUIRED, "inputs": _REQUIRED, "eps": 1e-6}
    fitted = ("coefficients", "low", "high")
    reads_drawn = True
    lo: float
    hi: float
    eps: float
    inputs: list[str]

    def _check_params(self) -> None:
        self.lo, self.hi, self.eps = float(self.lo), float(self.hi), float(self.eps)
        if not self.hi > self.lo:
            raise self._err(f"needs hi > lo, got lo={self.lo}, hi={self.hi}")
        if not isinstance(self.inputs, (list, tuple)) or not self.inputs or not all(isinstance(i, str) for i in self.inputs):
            raise self._err(f"'inputs' must be a non-empty list of expressions, got {self.inputs!r}")
        self.inputs = list(self.inputs)
        self._cuts = [expressions.parse(i, f"column {self.column!r}, step 'logit_residual', inputs") for i in self.inputs]
        self.coefficients: list[float] = []
        self.low, self.high = self.lo, self.hi

    @property
    def drawn_names(self) -> frozenset[str]:
        """The columns the inputs read."""
        return frozenset().union(*(cut.names for cut in self._cuts))

    def basis(self, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """``(n, 1 + len(inputs))``: a constant and each input evaluated on the drawn columns."""
        columns = [np.ones(n)]
        for text, cut in zip(self.inputs, self._cuts):
            try:
                value = np.broadcast_to(np.asarray(cut(drawn, f"column {self.column!r}, input {text!r}"), dtype=np.float64), (n,))
            except (TypeError, ValueError) as exc:  # a function called with the wrong arguments, a non-numeric result
                raise self._err(f"input {text!r} cannot be evaluated: {exc}") from exc
            bad = ~np.isfinite(value)
            if bad.any():
                raise self._err(f"input {text!r} is not finite: {_first_bad(value, bad)}")
            columns.append(value)
        return np.stack(columns, axis=1)

    @override
    def _prep(self, x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or ref is None or np.shape(ref) != (len(x), 1 + len(self.inputs)):
            raise self._err(f"needs the inputs' basis of shape ({len(x)}, {1 + len(self.inputs)}), got {np.shape(ref)}")
        return x, np.asarray(ref, dtype=np.float64)

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return _logit(np.clip((x - self.lo) / (self.hi - self.lo), self.eps, 1 - self.eps))

    @override
    def _check_domain(self, x, ref):
        bad = (x < self.lo) | (x > self.hi)
        if bad.any():
            raise self._err(f"value outside the declared range [{self.lo}, {self.hi}]: {_first_bad(x, bad)}")

    @override
    def _fit(self, x, ref):
        self.coefficients = [float(c) for c in np.linalg.lstsq(ref, self._logit(x), rcond=None)[0]]
        self.low, self.high = float(x.min()), float(x.max())

    @override
    def _forward(self, x, ref, rng):
        return self._logit(x) - ref @ np.asarray(self.coefficients)

    @override
    def _inverse(self, y, ref):
        x = self.lo + (self.hi - self.lo) * _sigmoid(y + ref @ np.asarray(self.coefficients))
        return np.clip(x, self.low, self.high)  # within the training range, as a clamp step keeps it
