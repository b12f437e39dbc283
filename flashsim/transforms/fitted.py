"""A score drawn as its residual from a fit on other drawn columns (an ID's MVA of the shower shape and isolation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from typing_extensions import override

from flashsim import expressions
from flashsim.transforms.base import _REQUIRED, TRANSFORMS, Transform, _first_bad, _sigmoid
from flashsim.transforms.continuous import Logit

__all__ = ["LogitResidual"]


@TRANSFORMS.register
class LogitResidual(Transform):
    """A score in [lo, hi] that is nearly a function of other columns the unit draws: y = logit of the score minus a
    linear least-squares fit of it on ``inputs`` (expressions of the columns of earlier target entries, such as
    ``"minimum(hoe, 1)"`` or ``"sieie * (abs(eta) < 1.479)"``); the inverse adds the fit of the drawn inputs back, so
    the model draws only what the inputs leave open. A score saturated at a bound of its range counts as the fit where
the fit is beyond that bound; the fit uses the rows inside ``fit_within`` in logit. Outside the cut ``where`` the score
is ``lo`` (an ID not defined there). A drawn score stays within the training range."""

    type = "logit_residual"
    params = {"lo": _REQUIRED, "hi": _REQUIRED, "inputs": _REQUIRED, "where": None, "eps": 1e-7, "fit_within": 9.0}
    fitted = ("coefficients", "low", "high")
    reads_drawn = True
    lo: float
    hi: float
    eps: float
    fit_within: float
    inputs: list[str]
    where: str | None

    def _check_params(self) -> None:
        self.lo, self.hi, self.eps, self.fit_within = float(self.lo), float(self.hi), float(self.eps), float(self.fit_within)
        self._scale = Logit(column=self.column, lo=self.lo, hi=self.hi, eps=self.eps)  # the score's logit on [lo, hi]
        if not isinstance(self.inputs, (list, tuple)) or not self.inputs or not all(isinstance(i, str) for i in self.inputs):
            raise self._err(f"'inputs' must be a non-empty list of expressions, got {self.inputs!r}")
        self.inputs = list(self.inputs)
        self._cuts = [expressions.parse(i, f"column {self.column!r}, step 'logit_residual', inputs") for i in self.inputs]
        # where the score is defined (elsewhere it is lo: a photon outside the barrel and endcap has no ID)
        self._where = None if self.where is None else expressions.parse(self.where, f"column {self.column!r}, step 'logit_residual', where")
        self.coefficients: list[float] = []
        self.low, self.high = self.lo, self.hi

    @property
    @override
    def drawn_names(self) -> frozenset[str]:
        """The columns the inputs read."""
        return frozenset().union(*(cut.names for cut in [*self._cuts, *([self._where] if self._where else [])]))

    @override
    def basis(self, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """``(n, 2 + len(inputs))``: whether the score is defined, a constant and each input on the drawn columns."""
        defined = np.ones(n) if self._where is None else np.broadcast_to(np.asarray(self._where(drawn), dtype=np.float64), (n,))
        columns = [defined, np.ones(n)]
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
        if x.ndim != 1 or ref is None or np.shape(ref) != (len(x), 2 + len(self.inputs)):
            raise self._err(f"needs the inputs' basis of shape ({len(x)}, {2 + len(self.inputs)}), got {np.shape(ref)}")
        return x, np.asarray(ref, dtype=np.float64)

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return self._scale._forward(x, None, None)

    @override
    def _check_domain(self, x, ref):
        self._scale._check_domain(x, None)

    @override
    def _fit(self, x, ref):
        # the rows where the score is defined and not saturated (a float32 score is +-1 beyond |logit| ~ 17): there
        # its logit is the function of the inputs
        logit = self._logit(x)
        defined, basis = ref[:, 0] > 0, ref[:, 1:]
        fitted = defined & (np.abs(logit) < self.fit_within)
        rows = fitted if fitted.sum() > 2 * basis.shape[1] else defined
        self.coefficients = [float(c) for c in np.linalg.lstsq(basis[rows], logit[rows], rcond=None)[0]]
        self.low, self.high = float(x.min()), float(x.max())

    def _residual(self, x: np.ndarray, fit: np.ndarray) -> np.ndarray:
        """logit(x) - fit, 0 where the score is saturated on the side the fit is beyond (the score is what the fit gives)."""
        logit = self._logit(x)
        bound = float(self._logit(np.array([self.hi])).item())  # the largest logit a score can show
        saturated = ((logit >= bound - 1e-6) & (fit >= logit)) | ((logit <= 1e-6 - bound) & (fit <= logit))
        return np.where(saturated, 0.0, logit - fit)

    @override
    def _forward(self, x, ref, rng):
        defined = ref[:, 0] > 0
        return np.where(defined, self._residual(x, ref[:, 1:] @ np.asarray(self.coefficients)), 0.0)

    @override
    def _inverse(self, y, ref):
        x = self.lo + (self.hi - self.lo) * _sigmoid(y + ref[:, 1:] @ np.asarray(self.coefficients))
        return np.where(ref[:, 0] > 0, np.clip(x, self.low, self.high), self.lo)  # within the training range, as a clamp keeps it
