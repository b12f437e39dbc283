"""Steps that draw what other drawn columns leave open: an ID's MVA score as its residual from a fit on the shower shape
and isolation, a cut-based ID level as the levels below what the drawn variables pass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from typing_extensions import override

from flashsim import expressions
from flashsim.transforms.base import _REQUIRED, TRANSFORMS, Transform, _first_bad, _sigmoid
from flashsim.transforms.continuous import Logit

__all__ = ["LogitResidual", "CutLevelResidual"]


class _ReadsInputs(Transform):
    """A step whose reference is a basis of ``inputs``: expressions of the columns of earlier target entries."""

    reads_drawn = True
    inputs: list[str]

    def _parse_inputs(self, *extra: tuple[str, str | None]) -> list[Any]:
        """Parse ``inputs`` and the named ``extra`` expressions (None where not given)."""
        if not isinstance(self.inputs, (list, tuple)) or not self.inputs or not all(isinstance(i, str) for i in self.inputs):
            raise self._err(f"'inputs' must be a non-empty list of expressions, got {self.inputs!r}")
        self.inputs = list(self.inputs)
        self._cuts = [expressions.parse(i, f"column {self.column!r}, step {self.type!r}, inputs") for i in self.inputs]
        parsed = [None if text is None else expressions.parse(text, f"column {self.column!r}, step {self.type!r}, {name}")
                  for name, text in extra]
        self._read = [*self._cuts, *(e for e in parsed if e is not None)]
        return parsed

    @property
    @override
    def drawn_names(self) -> frozenset[str]:
        """The columns the inputs (and the other expressions of the step) read."""
        return frozenset().union(*(cut.names for cut in self._read))

    def _evaluate(self, what: str, text: str, cut: Any, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """One expression on the ``n`` drawn rows, as float64; a non-finite value or a wrong call is an error naming it."""
        try:
            value = np.broadcast_to(np.asarray(cut(drawn, f"column {self.column!r}, {what} {text!r}"), dtype=np.float64), (n,))
        except (TypeError, ValueError) as exc:  # a function called with the wrong arguments, a non-numeric result
            raise self._err(f"{what} {text!r} cannot be evaluated: {exc}") from exc
        bad = ~np.isfinite(value)
        if bad.any():
            raise self._err(f"{what} {text!r} is not finite: {_first_bad(value, bad)}")
        return value

    def _input_columns(self, drawn: Mapping[str, Any], n: int) -> list[np.ndarray]:
        """Each input on the ``n`` drawn rows."""
        return [self._evaluate("input", text, cut, drawn, n) for text, cut in zip(self.inputs, self._cuts)]

    def _basis_width(self) -> int:
        raise NotImplementedError

    @override
    def _prep(self, x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(x, dtype=np.float64)
        width = self._basis_width()
        if x.ndim != 1 or ref is None or np.shape(ref) != (len(x), width):
            raise self._err(f"needs the inputs' basis of shape ({len(x)}, {width}), got {np.shape(ref)}")
        return x, np.asarray(ref, dtype=np.float64)


@TRANSFORMS.register
class LogitResidual(_ReadsInputs):
    """A score in [lo, hi] that is nearly a function of other columns the unit draws: y = logit of the score minus a
    linear least-squares fit of it on ``inputs`` (expressions of the columns of earlier target entries, such as
    ``"minimum(hoe, 1)"`` or ``"sieie * (abs(eta) < 1.479)"``); the inverse adds the fit of the drawn inputs back, so
    the model draws only what the inputs leave open. A score saturated at a bound of its range counts as the fit where
the fit is beyond that bound; the fit uses the rows inside ``fit_within`` in logit. Outside the cut ``where`` the score
is ``lo`` (an ID not defined there). A drawn score stays within the training range."""

    type = "logit_residual"
    params = {"lo": _REQUIRED, "hi": _REQUIRED, "inputs": _REQUIRED, "where": None, "eps": 1e-7, "fit_within": 9.0}
    fitted = ("coefficients", "low", "high")
    lo: float
    hi: float
    eps: float
    fit_within: float
    where: str | None

    def _check_params(self) -> None:
        self.lo, self.hi, self.eps, self.fit_within = float(self.lo), float(self.hi), float(self.eps), float(self.fit_within)
        self._scale = Logit(column=self.column, lo=self.lo, hi=self.hi, eps=self.eps)  # the score's logit on [lo, hi]
        # where the score is defined (elsewhere it is lo: a photon outside the barrel and endcap has no ID)
        [self._where] = self._parse_inputs(("where", self.where))
        self.coefficients: list[float] = []
        self.low, self.high = self.lo, self.hi

    @override
    def basis(self, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """``(n, 2 + len(inputs))``: whether the score is defined, a constant and each input on the drawn columns."""
        defined = np.ones(n) if self._where is None else self._evaluate("where", str(self.where), self._where, drawn, n)
        return np.stack([defined, np.ones(n), *self._input_columns(drawn, n)], axis=1)

    @override
    def _basis_width(self) -> int:
        return 2 + len(self.inputs)

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


@TRANSFORMS.register
class CutLevelResidual(_ReadsInputs):
    """A cut-based ID level (0 none, then one per working point passed in turn, up to ``levels``) drawn as the number of
    levels it lies below the bound that the drawn ``inputs`` pass: each input is cut from above, with thresholds learnt
    per working point (and per value of ``by``, such as the barrel and the endcap) as the largest value the objects
    reaching that point show. The inverse is the bound minus the drawn residual, so a drawn level never contradicts the
    drawn variables; a level above the bound (an object outside the rows it was fitted on) counts as the bound."""

    type = "cut_level_residual"
    params = {"levels": _REQUIRED, "inputs": _REQUIRED, "by": None}
    fitted = ("regions", "thresholds")
    levels: int
    by: str | None

    def _check_params(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise self._err(f"'levels' must be a positive integer, got {self.levels!r}")
        [self._by] = self._parse_inputs(("by", self.by))
        self.regions: list[float] = []
        self.thresholds: list[list[list[float | None]]] = []  # [region][working point][input]; None: no object reached it

    @override
    def basis(self, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """``(n, 1 + len(inputs))``: the region (the value of ``by``, 0 without it) and each input on the drawn columns."""
        region = np.zeros(n) if self._by is None else self._evaluate("by", str(self.by), self._by, drawn, n)
        return np.stack([region, *self._input_columns(drawn, n)], axis=1)

    @override
    def _basis_width(self) -> int:
        return 1 + len(self.inputs)

    @override
    def _check_domain(self, x, ref):
        bad = (x != np.round(x)) | (x < 0) | (x > self.levels)
        if bad.any():
            raise self._err(f"a level must be an integer in [0, {self.levels}]: {_first_bad(x, bad)}")

    @override
    def _fit(self, x, ref):
        self.regions = [float(r) for r in np.unique(ref[:, 0])]
        self.thresholds = []
        for region in self.regions:
            rows = ref[:, 0] == region
            # the largest value, widened by a relative 1e-5 so that the float32 model space gives the fitted rows back
            self.thresholds.append([[float(v + 1e-5 * abs(v)) for v in ref[rows & (x >= k), 1:].max(axis=0)] if (rows & (x >= k)).any()
                                    else [None] * len(self.inputs) for k in range(1, self.levels + 1)])

    def bound(self, ref: np.ndarray) -> np.ndarray:
        """The highest level whose working points (and every looser one) the inputs of each row pass; 0 in a region
        no fitted row held."""
        passes = np.zeros((len(ref), self.levels), dtype=bool)
        for region, table in zip(self.regions, self.thresholds):
            rows = ref[:, 0] == region
            cuts = np.array([[np.inf if t is None else t for t in point] for point in table])  # (levels, inputs)
            unreached = np.array([point[0] is None for point in table])
            passes[rows] = np.all(ref[rows, None, 1:] <= cuts[None], axis=2) & ~unreached[None]
        return np.cumprod(passes, axis=1).sum(axis=1).astype(np.float64)

    @override
    def _forward(self, x, ref, rng):
        return np.maximum(self.bound(ref) - x, 0.0)

    @override
    def _inverse(self, y, ref):
        bound = self.bound(ref)
        return np.clip(bound - np.round(y), 0.0, bound)
