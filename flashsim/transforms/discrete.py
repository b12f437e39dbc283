"""Steps for values with discrete structure: integers, classes, spikes of finite mass, scores."""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from flashsim.transforms.base import (
    _REQUIRED,
    TRANSFORMS,
    Transform,
    _first_bad,
    _logit,
    _sigmoid,
)

__all__ = ["Dequantize", "Categorical", "Spike", "Score"]


@TRANSFORMS.register
class Dequantize(Transform):
    """Integers: y = x + U(gap, 1 - gap) in training (x + 0.5 without rng); inverse floor.

    The small default ``gap`` keeps the round trip exact through float32 model space; the
    inverse is clipped to the fitted integer range (``clip = false`` turns it off).
    """

    type = "dequantize"
    params = {"clip": True, "gap": 1e-3}
    fitted = ("min", "max")
    noisy = True

    def _check_params(self):
        if not 0 <= float(self.gap) < 0.5:
            raise self._err(f"needs 0 <= gap < 0.5, got {self.gap}")

    @override
    def _check_domain(self, x, ref):
        bad = x != np.round(x)
        if bad.any():
            raise self._err(f"dequantize needs integer values, got {_first_bad(x, bad)}")

    @override
    def _fit(self, x, ref):
        self.min, self.max = float(x.min()), float(x.max())

    @override
    def _forward(self, x, ref, rng):
        u = rng.uniform(self.gap, 1.0 - self.gap, size=x.shape) if rng is not None else 0.5
        return x + u

    @override
    def _inverse(self, y, ref):
        x = np.floor(y)
        if self.clip:
            x = np.clip(x, self.min, self.max)
        return x


@TRANSFORMS.register
class Categorical(Transform):
    """Discrete classes (jetId in {0, 2, 6}, flags, bitmasks) -> ordinal k + U(gap, 1 - gap).

    The gaps between classes stop the model leaking mass into neighbours; the inverse takes
    floor(y) clipped to the valid ordinals and returns the class value. ``values`` may be
    omitted: they are then learnt (sorted unique values, at most ``max_classes``).
    """

    type = "categorical"
    params = {"values": None, "gap": 0.2, "max_classes": 64}
    fitted = ("classes",)
    noisy = True

    def _check_params(self):
        if not 0 <= float(self.gap) < 0.5:
            raise self._err(f"needs 0 <= gap < 0.5, got {self.gap}")
        if self.values is not None:
            vals = [float(v) for v in self.values]
            if len(vals) == 0:
                raise self._err("'values' is empty")
            if len(set(vals)) != len(vals):
                raise self._err(f"duplicate entries in values {self.values}")
            self.classes = sorted(vals)
            self.is_fitted = True

    @override
    def _fit(self, x, ref):
        if self.values is None:
            u = np.unique(x)
            if len(u) > self.max_classes:
                raise self._err(f"{len(u)} distinct values exceed max_classes={self.max_classes}")
            self.classes = [float(v) for v in u]

    def _index(self, x: np.ndarray) -> np.ndarray:
        cls = np.asarray(self.classes)
        idx = np.clip(np.searchsorted(cls, x), 0, len(cls) - 1)
        bad = cls[idx] != x
        if bad.any():
            raise self._err(f"value not among the allowed classes {self.classes}: {_first_bad(x, bad)}")
        return idx

    @override
    def _check_domain(self, x, ref):
        if self.is_fitted:
            self._index(x)

    @override
    def _forward(self, x, ref, rng):
        idx = self._index(x).astype(np.float64)
        if rng is None:
            return idx + 0.5
        return idx + rng.uniform(self.gap, 1.0 - self.gap, size=x.shape)

    @override
    def _inverse(self, y, ref):
        idx = np.clip(np.floor(y), 0, len(self.classes) - 1).astype(np.int64)
        return np.asarray(self.classes, dtype=np.float64)[idx]


@TRANSFORMS.register
class Spike(Transform):
    """Exact values with finite mass (a score at 0 or 1, a fraction exactly 0).

    On forward, x == v is spread uniformly into a band of ``width`` next to v; on inverse the
    band snaps back to v. ``side`` says where the band goes: "below" (for a spike at the lower
    edge of the data: [v - width, v), continuous values untouched), "above" ((v, v + width]),
    "both" (v +- width/2: continuous values inside the band are snapped to v), or "auto"
    (decided at fit from the data: below if no data < v, above if no data > v, else both).
    With "below"/"above" every value beyond v is snapped to v on inverse (a clamp at the edge).
    Between two spikes with no training data in between (a tagger's -1 outside the tracker and
    its 0), the inverse snaps to the nearer spike: the model's leakage never becomes a value
    the detector cannot give.
    """

    type = "spike"
    params = {"values": _REQUIRED, "width": 1e-3, "side": "auto"}
    fitted = ("sides", "gaps")
    noisy = True

    def _check_params(self):
        self.gaps: list[list[float]] = []
        if not isinstance(self.values, (list, tuple)) or not self.values:
            raise self._err(f"'values' must be a non-empty list, got {self.values!r}")
        self.values = [float(v) for v in self.values]
        self.width = float(self.width)
        if not self.width > 0:
            raise self._err(f"needs width > 0, got {self.width}")
        if self.side not in ("auto", "below", "above", "both"):
            raise self._err(f"side must be auto, below, above or both, got {self.side!r}")
        if self.side != "auto":
            self.sides = [self.side] * len(self.values)
            self.is_fitted = True
        vs = sorted(self.values)
        if any(b - a <= 2 * self.width for a, b in zip(vs, vs[1:])):
            raise self._err(f"spike values {self.values} closer than 2 * width = {2 * self.width}")

    @override
    def _fit(self, x, ref):
        if self.side == "auto":
            sides = []
            for v in self.values:
                if not (x < v).any():
                    sides.append("below")
                elif not (x > v).any():
                    sides.append("above")
                else:
                    sides.append("both")
            self.sides = sides
        vs = sorted(self.values)
        self.gaps = [[a, b] for a, b in zip(vs, vs[1:]) if not ((x > a) & (x < b)).any()]

    def _band(self, side: str, v: float) -> tuple[float, float]:
        w = self.width
        return {"below": (v - w, v), "above": (v, v + w), "both": (v - w / 2, v + w / 2)}[side]

    @override
    def _forward(self, x, ref, rng):
        y = x.copy()
        for v, side in zip(self.values, self.sides):
            at = x == v
            n = int(at.sum())
            if n:
                lo, hi = self._band(side, v)
                if rng is None:
                    y[at] = 0.5 * (lo + hi)
                else:
                    # open band on the continuous side: never lands exactly on v
                    u = rng.uniform(0.0, 1.0, size=n)
                    u = np.where(u == 0.0, 0.5, u)
                    y[at] = lo + (hi - lo) * u if side != "above" else hi - (hi - lo) * u
        return y

    @override
    def _inverse(self, y, ref):
        x = y.copy()
        for v, side in zip(self.values, self.sides):
            lo, hi = self._band(side, v)
            if side == "below":
                x[y < v] = v
            elif side == "above":
                x[y > v] = v
            else:
                x[(y >= lo) & (y <= hi)] = v
        for a, b in self.gaps:
            inside = (y > a) & (y < b) & (x != a) & (x != b)
            x[inside] = np.where(y[inside] < 0.5 * (a + b), a, b)
        return x


@TRANSFORMS.register
class Score(Transform):
    """A score or fraction in [0, 1] (a tagger, the q/g likelihood, an energy fraction):
    y = logit(x), which resolves the sharp peaks near 0 and 1. Exact values with finite mass go
    to bands of width ``band`` beyond the logits, ``gap`` away, both in units of the logits' std
    (so every band stays within reach of the flow whatever the spread): ``spikes`` 0 (below) and 1
    (above), and a ``default`` outside [0, 1] (a tagger's -1 where it is undefined; below, beyond
    the spike at 0). A spike takes every value within ``tolerance`` of it (float rounding: a
    stick-breaking fraction that is 1 up to 1e-8). The few logits beyond the ``quantile`` and
    ``1 - quantile`` quantiles are clipped to them. The inverse snaps every y beyond the middle
    of a gap to that band's value.
    """

    type = "score"
    params = {"default": None, "spikes": [], "tolerance": 1e-5, "eps": 1e-6, "quantile": 1e-3, "gap": 0.5, "band": 2.0}
    fitted = ("low", "high", "scale")
    noisy = True

    def _check_params(self):
        self.eps, self.quantile, self.tolerance = float(self.eps), float(self.quantile), float(self.tolerance)
        self.gap, self.band = float(self.gap), float(self.band)
        if not 0 <= self.tolerance < 0.5:
            raise self._err(f"needs 0 <= tolerance < 0.5, got {self.tolerance}")
        if self.default is not None:
            self.default = float(self.default)
            if 0 <= self.default <= 1:
                raise self._err(f"default {self.default} must lie outside the score range [0, 1]")
        if not isinstance(self.spikes, (list, tuple)) or not set(map(float, self.spikes)) <= {0.0, 1.0}:
            raise self._err(f"spikes must be a list of 0 and/or 1, got {self.spikes!r}")
        self.spikes = sorted({float(v) for v in self.spikes})
        if not 0 < self.eps < 0.5:
            raise self._err(f"needs 0 < eps < 0.5, got {self.eps}")
        if not 0 <= self.quantile < 0.5:
            raise self._err(f"needs 0 <= quantile < 0.5, got {self.quantile}")
        if not (self.gap > 0 and self.band > 0):
            raise self._err(f"needs gap > 0 and band > 0, got gap={self.gap}, band={self.band}")

    def _bands(self) -> list[tuple[float, float]]:
        """(value, direction) of each band, nearest first on each side: -1 below, +1 above."""
        below = ([0.0] if 0.0 in self.spikes else []) + ([self.default] if self.default is not None else [])
        return [(v, -1.0) for v in below] + ([(1.0, 1.0)] if 1.0 in self.spikes else [])

    def _at(self, x: np.ndarray, v: float) -> np.ndarray:
        if v == 0.0:
            return x <= self.tolerance
        if v == 1.0:
            return x >= 1.0 - self.tolerance
        return x == v

    @override
    def _check_domain(self, x, ref):
        bad = ((x < 0) | (x > 1)) & (x != self.default if self.default is not None else True)
        if bad.any():
            allowed = "[0, 1]" + (f" or the default {self.default}" if self.default is not None else "")
            raise self._err(f"score outside {allowed}: {_first_bad(x, bad)}")

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return _logit(np.clip(x, self.eps, 1 - self.eps))

    @override
    def _fit(self, x, ref):
        interior = np.ones(x.shape, bool)
        for v, _ in self._bands():
            interior &= ~self._at(x, v)
        logits = self._logit(x[interior] if interior.any() else np.full(1, 0.5))
        self.low, self.high = (float(v) for v in np.quantile(logits, [self.quantile, 1 - self.quantile]))
        std = float(np.std(logits))
        self.scale = std if std > 0 else 1.0

    def _edge(self, direction: float, k: int) -> float:
        """Inner edge of the k-th band on one side (k = 0 nearest the logits)."""
        start = self.low if direction < 0 else self.high
        return start + direction * self.scale * (self.gap + k * (self.gap + self.band))

    @override
    def _forward(self, x, ref, rng):
        y = np.clip(self._logit(x), self.low, self.high)
        count = {-1.0: 0, 1.0: 0}
        for v, direction in self._bands():
            at = self._at(x, v)
            n = int(at.sum())
            if n:
                u = rng.uniform(0.0, 1.0, size=n) if rng is not None else 0.5
                y[at] = self._edge(direction, count[direction]) + direction * self.scale * self.band * u
            count[direction] += 1
        return y

    @override
    def _inverse(self, y, ref):
        x = _sigmoid(y)
        count = {-1.0: 0, 1.0: 0}
        for v, direction in self._bands():  # nearest band first: farther ones override beyond their gap
            k = count[direction]
            mid = self._edge(direction, k) - direction * self.scale * 0.5 * self.gap
            x = np.where(direction * (y - mid) > 0, v, x)
            count[direction] += 1
        return x


