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

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

__all__ = [
    "Transform",
    "MultiColumnTransform",
    "Log",
    "Log1p",
    "Logit",
    "Standardize",
    "Ratio",
    "LogRatio",
    "Difference",
    "PhiDifference",
    "Dequantize",
    "Categorical",
    "Spike",
    "Clamp",
    "StickBreaking",
    "TargetPipeline",
    "ContextPipeline",
    "TRANSFORMS",
    "transform_from_config",
]

_EXP_MAX = 700.0  # exp(700) is finite in float64: keeps inverses of wild samples finite


def _as_float(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _first_bad(x: np.ndarray, bad: np.ndarray) -> str:
    i = int(np.flatnonzero(bad)[0])
    return f"{x[i].item()!r} at row {i} ({int(bad.sum())} bad rows)"


# ----------------------------------------------------------------------------------------
# elementary transforms
# ----------------------------------------------------------------------------------------


class Transform:
    """One invertible step on one column: ``fit``, ``forward``, ``inverse``, ``to_dict``.

    ``params`` are the configured hyper-parameters (from TOML); ``fitted`` names attributes
    learnt by :meth:`fit`. ``column`` is used in error messages only.
    """

    type: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}  # name -> default (``_REQUIRED`` if mandatory)
    fitted: ClassVar[tuple[str, ...]] = ()
    uses_reference: ClassVar[bool] = False
    noisy: ClassVar[bool] = False  # forward adds noise when given an rng

    def __init__(self, column: str = "?", reference: str | None = None, **params: Any):
        self.column = column
        self.reference = reference
        if self.uses_reference and reference is None:
            raise ValueError(f"column {column!r}: step {self.type!r} needs a 'reference' column")
        if not self.uses_reference and reference is not None:
            raise ValueError(f"column {column!r}: step {self.type!r} takes no 'reference'")
        for key in params:
            if key not in self.params:
                raise ValueError(
                    f"column {column!r}: unknown option {key!r} for step {self.type!r} "
                    f"(known: {sorted(self.params)})"
                )
        for key, default in self.params.items():
            if key not in params and default is _REQUIRED:
                raise ValueError(f"column {column!r}: step {self.type!r} needs option {key!r}")
            setattr(self, key, params.get(key, default))
        self.is_fitted = not self.fitted
        self._check_params()

    # -- to override -------------------------------------------------------------------
    def _check_params(self) -> None:
        pass

    def _fit(self, x: np.ndarray, ref: np.ndarray | None) -> None:
        pass

    def _check_domain(self, x: np.ndarray, ref: np.ndarray | None) -> None:
        pass

    def _forward(self, x: np.ndarray, ref: np.ndarray | None, rng: np.random.Generator | None) -> np.ndarray:
        raise NotImplementedError

    def _inverse(self, y: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------
    def _err(self, what: str) -> ValueError:
        return ValueError(f"column {self.column!r}, step {self.type!r}: {what}")

    def _prep(self, x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x = _as_float(x)
        if x.ndim != 1:
            raise self._err(f"expected a 1-D column, got shape {x.shape}")
        if self.uses_reference:
            if ref is None:
                raise self._err(f"reference column {self.reference!r} is missing")
            ref = _as_float(ref)
            if ref.shape != x.shape:
                raise self._err(f"reference {self.reference!r} has shape {ref.shape}, column has {x.shape}")
            bad = ~np.isfinite(ref)
            if bad.any():
                raise self._err(f"non-finite reference {self.reference!r} value {_first_bad(ref, bad)}")
        else:
            ref = None
        return x, ref

    def _validate(self, x: np.ndarray, ref: np.ndarray | None) -> None:
        bad = ~np.isfinite(x)
        if bad.any():
            raise self._err(f"non-finite input value {_first_bad(x, bad)}")
        self._check_domain(x, ref)

    def fit(self, x: Any, ref: Any = None) -> "Transform":
        """Learn the state of this step from training values (after the previous steps)."""
        x, ref = self._prep(x, ref)
        self._validate(x, ref)
        if x.size == 0 and self.fitted:
            raise self._err("cannot fit on an empty column")
        self._fit(x, ref)
        self.is_fitted = True
        return self

    def forward(self, x: Any, ref: Any = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """Map values to the model space; ``rng`` drives dequantisation noise (None: midpoints)."""
        if not self.is_fitted:
            raise self._err("forward called before fit")
        x, ref = self._prep(x, ref)
        self._validate(x, ref)
        return self._forward(x, ref, rng)

    def inverse(self, y: Any, ref: Any = None) -> np.ndarray:
        """Map model-space values back; always finite for finite input."""
        if not self.is_fitted:
            raise self._err("inverse called before fit")
        y, ref = self._prep(y, ref)
        return self._inverse(y, ref)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.reference is not None:
            d["reference"] = self.reference
        for key in self.params:
            d[key] = _jsonable(getattr(self, key))
        if self.fitted:
            d["state"] = {k: _jsonable(getattr(self, k)) for k in self.fitted} if self.is_fitted else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], column: str = "?") -> "Transform":
        d = dict(d)
        state = d.pop("state", None)
        d.pop("type", None)
        obj = cls(column=column, **d)
        if state is not None:
            for k in cls.fitted:
                if k in state or not hasattr(obj, k):  # a default in __init__ covers files older than k
                    setattr(obj, k, state[k])
            obj.is_fitted = True
        return obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class _Required:
    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    return v


class Log(Transform):
    """y = log(x + offset); needs x + offset > 0."""

    type = "log"
    params = {"offset": 0.0}

    def _check_domain(self, x, ref):
        bad = ~(x + self.offset > 0)
        if bad.any():
            raise self._err(f"log needs x + offset > 0 (offset={self.offset}), got {_first_bad(x, bad)}")

    def _forward(self, x, ref, rng):
        return np.log(x + self.offset)

    def _inverse(self, y, ref):
        return np.exp(np.minimum(y, _EXP_MAX)) - self.offset


class Log1p(Transform):
    """y = log(1 + x); needs x > -1."""

    type = "log1p"

    def _check_domain(self, x, ref):
        bad = ~(x > -1)
        if bad.any():
            raise self._err(f"log1p needs x > -1, got {_first_bad(x, bad)}")

    def _forward(self, x, ref, rng):
        return np.log1p(x)

    def _inverse(self, y, ref):
        return np.expm1(np.minimum(y, _EXP_MAX))


class Asinh(Transform):
    """y = asinh((x + offset) / scale): log-like on both signs, for heavy-tailed signed values
    (impact parameters); with ``offset = -t`` and a small scale it magnifies the region around a
    threshold t (a sharp efficiency turn-on in a conditioning column)."""

    type = "asinh"
    params = {"scale": 1.0, "offset": 0.0}

    def _check_params(self):
        if not self.scale > 0:
            raise self._err(f"asinh needs scale > 0, got {self.scale}")

    def _forward(self, x, ref, rng):
        return np.arcsinh((x + self.offset) / self.scale)

    def _inverse(self, y, ref):
        return np.sinh(np.clip(y, -_EXP_MAX, _EXP_MAX)) * self.scale - self.offset


def _logit(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * y))  # stable for large |y|


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

    def _check_domain(self, x, ref):
        bad = (x < self.lo) | (x > self.hi)
        if bad.any():
            raise self._err(f"value outside the declared range [{self.lo}, {self.hi}]: {_first_bad(x, bad)}")

    def _forward(self, x, ref, rng):
        return _logit(np.clip((x - self.lo) / (self.hi - self.lo), self.eps, 1 - self.eps))

    def _inverse(self, y, ref):
        u = _sigmoid(y)
        x = self.lo + (self.hi - self.lo) * u
        x = np.where(u <= self.eps * (1 + 1e-6), self.lo, x)
        x = np.where(u >= 1 - self.eps * (1 + 1e-6), self.hi, x)
        return np.clip(x, self.lo, self.hi)


class Standardize(Transform):
    """y = (x - mean) / std with mean and std fitted (std of a constant column is 1)."""

    type = "standardize"
    fitted = ("mean", "std")

    def _fit(self, x, ref):
        self.mean = float(np.mean(x))
        std = float(np.std(x))
        self.std = std if std > 0 and np.isfinite(std) else 1.0

    def _forward(self, x, ref, rng):
        return (x - self.mean) / self.std

    def _inverse(self, y, ref):
        return y * self.std + self.mean


class Ratio(Transform):
    """y = x / ref; needs ref != 0."""

    type = "ratio"
    uses_reference = True

    def _check_domain(self, x, ref):
        bad = ref == 0
        if bad.any():
            raise self._err(f"ratio needs a non-zero reference {self.reference!r}, got {_first_bad(ref, bad)}")

    def _forward(self, x, ref, rng):
        return x / ref

    def _inverse(self, y, ref):
        return y * ref


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

    def _forward(self, x, ref, rng):
        return np.log(x + self.offset) - np.log(ref)

    def _inverse(self, y, ref):
        return np.exp(np.minimum(y + np.log(np.maximum(ref, 1e-300)), _EXP_MAX)) - self.offset


class Difference(Transform):
    """y = x - ref (eta)."""

    type = "difference"
    uses_reference = True

    def _forward(self, x, ref, rng):
        return x - ref

    def _inverse(self, y, ref):
        return y + ref


def _wrap(a: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi)."""
    w = np.mod(a + np.pi, 2 * np.pi) - np.pi
    return np.where(w >= np.pi, w - 2 * np.pi, w)


class PhiDifference(Transform):
    """y = wrap(x - ref) in [-pi, pi); inverse wrap(y + ref) in [-pi, pi)."""

    type = "phi_difference"
    uses_reference = True

    def _forward(self, x, ref, rng):
        return _wrap(x - ref)

    def _inverse(self, y, ref):
        return _wrap(y + ref)


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

    def _check_domain(self, x, ref):
        bad = x != np.round(x)
        if bad.any():
            raise self._err(f"dequantize needs integer values, got {_first_bad(x, bad)}")

    def _fit(self, x, ref):
        self.min, self.max = float(x.min()), float(x.max())

    def _forward(self, x, ref, rng):
        u = rng.uniform(self.gap, 1.0 - self.gap, size=x.shape) if rng is not None else 0.5
        return x + u

    def _inverse(self, y, ref):
        x = np.floor(y)
        if self.clip:
            x = np.clip(x, self.min, self.max)
        return x


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

    def _check_domain(self, x, ref):
        if self.is_fitted:
            self._index(x)

    def _forward(self, x, ref, rng):
        idx = self._index(x).astype(np.float64)
        if rng is None:
            return idx + 0.5
        return idx + rng.uniform(self.gap, 1.0 - self.gap, size=x.shape)

    def _inverse(self, y, ref):
        idx = np.clip(np.floor(y), 0, len(self.classes) - 1).astype(np.int64)
        return np.asarray(self.classes, dtype=np.float64)[idx]


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

    def _check_domain(self, x, ref):
        bad = ((x < 0) | (x > 1)) & (x != self.default if self.default is not None else True)
        if bad.any():
            allowed = "[0, 1]" + (f" or the default {self.default}" if self.default is not None else "")
            raise self._err(f"score outside {allowed}: {_first_bad(x, bad)}")

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return _logit(np.clip(x, self.eps, 1 - self.eps))

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

    def _inverse(self, y, ref):
        x = _sigmoid(y)
        count = {-1.0: 0, 1.0: 0}
        for v, direction in self._bands():  # nearest band first: farther ones override beyond their gap
            k = count[direction]
            mid = self._edge(direction, k) - direction * self.scale * 0.5 * self.gap
            x = np.where(direction * (y - mid) > 0, v, x)
            count[direction] += 1
        return x


class Clamp(Transform):
    """Identity on forward; clip to the fitted (or declared) range on inverse.

    Put it first in a chain so that it acts last on inverse, in the original space.
    ``lo``/``hi`` override the fitted bounds; ``margin`` widens the fitted range by that
    fraction of its width.
    """

    type = "clamp"
    params = {"lo": None, "hi": None, "margin": 0.0}
    fitted = ("min", "max")

    def _fit(self, x, ref):
        lo, hi = float(x.min()), float(x.max())
        pad = float(self.margin) * (hi - lo)
        self.min = float(self.lo) if self.lo is not None else lo - pad
        self.max = float(self.hi) if self.hi is not None else hi + pad

    def _forward(self, x, ref, rng):
        return x.copy()

    def _inverse(self, y, ref):
        return np.clip(np.nan_to_num(y, nan=self.min), self.min, self.max)


TRANSFORMS: dict[str, type[Transform]] = {
    t.type: t
    for t in (Log, Log1p, Logit, Standardize, Ratio, LogRatio, Difference, PhiDifference,
              Dequantize, Categorical, Spike, Clamp, Asinh, Score)
}


def transform_from_config(cfg: Mapping[str, Any], column: str = "?") -> Transform:
    """Build an (unfitted) elementary transform from ``{"type": ..., **options}``."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ValueError(f"column {column!r}: each step needs a 'type', got {cfg!r}")
    kind = cfg["type"]
    if kind not in TRANSFORMS:
        raise ValueError(
            f"column {column!r}: unknown step type {kind!r} (known: {sorted(TRANSFORMS) + sorted(MULTI_TRANSFORMS)})"
        )
    opts = {k: v for k, v in cfg.items() if k != "type"}
    return TRANSFORMS[kind](column=column, **opts)


# ----------------------------------------------------------------------------------------
# multi-column transforms
# ----------------------------------------------------------------------------------------


class MultiColumnTransform:
    """A step that maps k columns jointly to model features (first step of a ``columns`` group)."""

    type: ClassVar[str] = ""

    def __init__(self, columns: Sequence[str], **params: Any):
        self.columns = list(columns)
        if params:
            raise ValueError(f"columns {self.columns}: unknown options {sorted(params)} for step {self.type!r}")

    @property
    def references(self) -> list[str]:
        """Reference columns the step reads (passed to forward/inverse as ``refs``)."""
        return []

    @property
    def outputs(self) -> list[str]:
        """Names of the features it gives: one per column unless some columns follow from the others."""
        return list(self.columns)

    def fit(self, xs: list[np.ndarray], refs: list[np.ndarray]) -> "MultiColumnTransform":
        return self

    def forward(self, xs: list[np.ndarray], refs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def inverse(self, ys: list[np.ndarray], refs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], columns: Sequence[str]) -> "MultiColumnTransform":
        d = dict(d)
        d.pop("type", None)
        return cls(columns, **d)


class StickBreaking(MultiColumnTransform):
    """Fractions f_1..f_k >= 0 with sum <= 1 -> stick pieces v_j = f_j / (1 - sum_{i<j} f_i) in [0, 1].

    The inverse f_j = v_j * prod_{i<j} (1 - v_i) (v clipped to [0, 1]) gives sum f = 1 - prod(1 - v)
    <= 1 by construction. When the stick is used up (remaining 0) the piece is 0.
    Input sums may exceed 1 by at most ``tolerance`` (rounding in stored fractions).
    """

    type = "stick_breaking"

    def __init__(self, columns: Sequence[str], tolerance: float = 1e-3, **params: Any):
        super().__init__(columns, **params)
        self.tolerance = float(tolerance)
        if not 0 <= self.tolerance < 0.5:
            raise ValueError(f"columns {self.columns}: stick_breaking tolerance must be in [0, 0.5), got {tolerance}")

    def _check(self, xs: list[np.ndarray]) -> np.ndarray:
        if len(xs) != len(self.columns):
            raise ValueError(f"columns {self.columns}: stick_breaking got {len(xs)} columns")
        f = np.stack([_as_float(x) for x in xs], axis=1)
        for j, c in enumerate(self.columns):
            col = f[:, j]
            bad = ~np.isfinite(col) | (col < 0) | (col > 1 + self.tolerance)
            if bad.any():
                raise ValueError(f"column {c!r}, step 'stick_breaking': fraction outside [0, 1]: {_first_bad(col, bad)}")
        s = f.sum(axis=1)
        bad = s > 1 + self.tolerance
        if bad.any():
            raise ValueError(
                f"columns {self.columns}, step 'stick_breaking': fractions sum above 1: {_first_bad(s, bad)}"
            )
        return f

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


class PolarResidual(MultiColumnTransform):
    """(pt, phi) -> (px - ref_px, py - ref_py): a vector's residual from a reference vector.

    For MET: ``reference = ["GenMET.pt", "GenMET.phi"]`` gives the x/y mismeasurement, which is
    what the upstream reco-minus-gen momentum of jets and muons adds to, in the lab frame.
    """

    type = "polar_residual"

    def __init__(self, columns: Sequence[str], reference: Sequence[str] | None = None, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 2:
            raise ValueError(f"columns {self.columns}: polar_residual takes two columns, [pt, phi]")
        if not isinstance(reference, (list, tuple)) or len(reference) != 2 or not all(isinstance(r, str) for r in reference):
            raise ValueError(f"columns {self.columns}: polar_residual needs reference = [pt column, phi column], got {reference!r}")
        self.reference = list(reference)

    @property
    def references(self) -> list[str]:
        return list(self.reference)

    def forward(self, xs, refs):
        pt, phi = (_as_float(x) for x in xs)
        bad = ~np.isfinite(pt) | (pt < 0) | ~np.isfinite(phi)
        if bad.any():
            raise ValueError(f"columns {self.columns}, step 'polar_residual': pt < 0 or non-finite: {_first_bad(pt, bad)}")
        rpt, rphi = (_as_float(r) for r in refs)
        return [pt * np.cos(phi) - rpt * np.cos(rphi), pt * np.sin(phi) - rpt * np.sin(rphi)]

    def inverse(self, ys, refs):
        rpt, rphi = (_as_float(r) for r in refs)
        px = _as_float(ys[0]) + rpt * np.cos(rphi)
        py = _as_float(ys[1]) + rpt * np.sin(rphi)
        return [np.hypot(px, py), np.arctan2(py, px)]

    def to_dict(self):
        return {"type": self.type, "reference": list(self.reference)}


class FlavourScores(MultiColumnTransform):
    """[B, CvB, CvL] of one multiclass tagger (DeepJet) -> [CvB, CvL]; B follows from the other two.

    The class probabilities b + c + udsg sum to one, so B = (1 - CvB) CvL / (CvB + CvL - CvB CvL).
    The logits of CvB and CvL are the tagger's own log-ratios log(c/b) and log(c/udsg), well resolved
    where B is near 1; modelling only these keeps the flow off a 2-D sheet in 3-D. A jet with no
    score has the default in all three; the inverse gives it wherever CvB or CvL is drawn at it.
    """

    type = "flavour_scores"

    def __init__(self, columns: Sequence[str], default: float = -1.0, tolerance: float = 0.01, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 3:
            raise ValueError(f"columns {self.columns}: flavour_scores takes three columns, [B, CvB, CvL]")
        self.default, self.tolerance = float(default), float(tolerance)
        if not 0 < self.tolerance < 0.5:
            raise ValueError(f"columns {self.columns}: flavour_scores tolerance must be in (0, 0.5), got {tolerance}")

    @property
    def outputs(self) -> list[str]:
        return self.columns[1:]

    @staticmethod
    def _b(cvb: np.ndarray, cvl: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.nan_to_num((1 - cvb) * cvl / (cvb + cvl - cvb * cvl), nan=0.5)

    def forward(self, xs, refs):
        b, cvb, cvl = (_as_float(x) for x in xs)
        scored = b != self.default
        for c, x in zip(self.columns, (b, cvb, cvl)):
            bad = ~np.isfinite(x) | (scored & ((x < 0) | (x > 1))) | (~scored & (x != self.default))
            if bad.any():
                raise ValueError(f"column {c!r}, step 'flavour_scores': not a score in [0, 1] "
                                 f"(or the default {self.default} where B has it): {_first_bad(x, bad)}")
        bad = scored & (np.abs(self._b(cvb, cvl) - b) > self.tolerance)
        if bad.any():
            raise ValueError(f"column {self.columns[0]!r}, step 'flavour_scores': B differs from (1 - CvB) CvL / "
                             f"(CvB + CvL - CvB CvL) by more than {self.tolerance} (not one multiclass tagger's scores): "
                             f"{_first_bad(b, bad)}")
        return [cvb, cvl]

    def inverse(self, ys, refs):
        cvb, cvl = (_as_float(y) for y in ys)
        none = (cvb == self.default) | (cvl == self.default)
        b = self._b(np.clip(cvb, 0.0, 1.0), np.clip(cvl, 0.0, 1.0))
        return [np.where(none, self.default, x) for x in (b, cvb, cvl)]

    def to_dict(self):
        return {"type": self.type, "default": self.default, "tolerance": self.tolerance}


class HypotRatio(MultiColumnTransform):
    """[x, y, r] -> [x, y, log(r / hypot(x, y))]: a length relative to the hypotenuse of two others.

    For a muon's ip3d against its dxy and dz, the log-ratio is narrow around 0 (exactly 0, within
    ``tolerance``, where the three are one vector's components), which a ``spike`` step at 0 can take.
    """

    type = "hypot_ratio"

    def __init__(self, columns: Sequence[str], tolerance: float = 1e-4, **params: Any):
        super().__init__(columns, **params)
        if len(self.columns) != 3:
            raise ValueError(f"columns {self.columns}: hypot_ratio takes three columns, [x, y, length]")
        self.tolerance = float(tolerance)
        if not 0 <= self.tolerance < 0.1:
            raise ValueError(f"columns {self.columns}: hypot_ratio tolerance must be in [0, 0.1), got {tolerance}")

    def forward(self, xs, refs):
        x, y, r = (_as_float(v) for v in xs)
        h = np.hypot(x, y)
        bad = ~np.isfinite(h) | ~np.isfinite(r) | (r <= 0) | (h <= 0)
        if bad.any():
            raise ValueError(f"column {self.columns[2]!r}, step 'hypot_ratio': needs a length > 0 and "
                             f"{self.columns[0]!r}, {self.columns[1]!r} not both 0: {_first_bad(r, bad)}")
        ratio = np.log(r / h)
        return [x, y, np.where(np.abs(ratio) <= self.tolerance, 0.0, ratio)]

    def inverse(self, ys, refs):
        x, y, ratio = (_as_float(v) for v in ys)
        return [x, y, np.hypot(x, y) * np.exp(np.clip(ratio, -_EXP_MAX, _EXP_MAX))]

    def to_dict(self):
        return {"type": self.type, "tolerance": self.tolerance}


MULTI_TRANSFORMS: dict[str, type[MultiColumnTransform]] = {t.type: t for t in (StickBreaking, PolarResidual, FlavourScores, HypotRatio)}


# ----------------------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------------------


class _Group:
    """One config entry: a column (or a list of columns with a joint first step) + its chain."""

    def __init__(self, cfg: Mapping[str, Any], index: int):
        if not isinstance(cfg, Mapping):
            raise ValueError(f"pipeline entry {index}: expected a table/dict, got {cfg!r}")
        unknown = set(cfg) - {"column", "columns", "steps"}
        if unknown:
            raise ValueError(f"pipeline entry {index}: unknown keys {sorted(unknown)} (use column/columns/steps)")
        if ("column" in cfg) == ("columns" in cfg):
            raise ValueError(f"pipeline entry {index}: give exactly one of 'column' or 'columns'")
        steps = list(cfg.get("steps", []))
        self.config = {k: v for k, v in cfg.items()}
        self.multi: MultiColumnTransform | None = None
        if "column" in cfg:
            if not isinstance(cfg["column"], str):
                raise ValueError(f"pipeline entry {index}: 'column' must be a string, got {cfg['column']!r}")
            self.columns = [cfg["column"]]
        else:
            cols = cfg["columns"]
            if not isinstance(cols, (list, tuple)) or not cols or not all(isinstance(c, str) for c in cols):
                raise ValueError(f"pipeline entry {index}: 'columns' must be a non-empty list of names, got {cols!r}")
            self.columns = list(cols)
            if not steps or not isinstance(steps[0], Mapping) or steps[0].get("type") not in MULTI_TRANSFORMS:
                raise ValueError(
                    f"columns {self.columns}: a 'columns' entry must start with a multi-column step "
                    f"({sorted(MULTI_TRANSFORMS)})"
                )
            first = dict(steps[0])
            kind = first.pop("type")
            self.multi = MULTI_TRANSFORMS[kind](self.columns, **first)
            steps = steps[1:]
        for s in steps:
            if isinstance(s, Mapping) and s.get("type") in MULTI_TRANSFORMS:
                raise ValueError(
                    f"column(s) {self.columns}: multi-column step {s['type']!r} must be the first step "
                    "of a 'columns = [...]' entry"
                )
        # one independent chain per feature (each fits its own state)
        self.chains: list[list[Transform]] = [
            [transform_from_config(s, column=c) for s in steps] for c in self.outputs
        ]
        self.dtypes: list[str] | None = None

    @property
    def outputs(self) -> list[str]:
        """The features this entry gives the model, in order."""
        return self.multi.outputs if self.multi is not None else list(self.columns)

    @property
    def references(self) -> set[str]:
        refs = {t.reference for chain in self.chains for t in chain if t.reference is not None}
        return refs | set(self.multi.references if self.multi is not None else ())

    def _multi_refs(self, refs: Mapping[str, Any]) -> list[np.ndarray]:
        assert self.multi is not None
        missing = [r for r in self.multi.references if r not in refs]
        if missing:
            raise ValueError(f"columns {self.columns}, step {self.multi.type!r}: reference column {missing[0]!r} not given")
        return [np.asarray(refs[r]) for r in self.multi.references]

    def _ref(self, t: Transform, refs: Mapping[str, Any], n: int) -> np.ndarray | None:
        if t.reference is None:
            return None
        if refs is None or t.reference not in refs:
            raise ValueError(f"column {t.column!r}, step {t.type!r}: reference column {t.reference!r} not given")
        return refs[t.reference]

    def _inputs(self, targets: Mapping[str, Any]) -> list[np.ndarray]:
        xs = []
        for c in self.columns:
            if c not in targets:
                raise ValueError(f"column {c!r} missing from the inputs (have {sorted(targets)})")
            x = np.asarray(targets[c])
            if x.ndim != 1:
                raise ValueError(f"column {c!r}: expected a 1-D array, got shape {x.shape}")
            xs.append(x)
        return xs

    def fit(self, targets, refs, rng) -> None:
        xs = self._inputs(targets)
        self.dtypes = [x.dtype.str if x.dtype != bool else "bool" for x in xs]
        xs = [_as_float(x) for x in xs]
        if self.multi is not None:
            mrefs = self._multi_refs(refs)
            self.multi.fit(xs, mrefs)
            xs = self.multi.forward(xs, mrefs)
        for x, chain in zip(xs, self.chains):
            for t in chain:
                ref = self._ref(t, refs, len(x))
                t.fit(x, ref)
                x = t.forward(x, ref, rng)

    def forward(self, targets, refs, rng) -> list[np.ndarray]:
        xs = [_as_float(x) for x in self._inputs(targets)]
        if self.multi is not None:
            xs = self.multi.forward(xs, self._multi_refs(refs))
        out = []
        for x, chain in zip(xs, self.chains):
            for t in chain:
                x = t.forward(x, self._ref(t, refs, len(x)), rng)
            out.append(x)
        return out

    def inverse(self, ys: list[np.ndarray], refs) -> dict[str, np.ndarray]:
        xs = []
        for y, chain in zip(ys, self.chains):
            x = _as_float(y)
            for t in reversed(chain):
                x = t.inverse(x, self._ref(t, refs, len(x)))
            xs.append(x)
        if self.multi is not None:
            xs = self.multi.inverse(xs, self._multi_refs(refs))
        return {c: _restore_dtype(c, x, dt) for c, x, dt in zip(self.columns, xs, self.dtypes or [None] * len(xs))}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"columns": list(self.columns), "dtypes": self.dtypes}
        if self.multi is not None:
            d["multi"] = self.multi.to_dict()
        d["chains"] = [[t.to_dict() for t in chain] for chain in self.chains]
        d["config"] = _jsonable_config(self.config)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], index: int) -> "_Group":
        g = cls(d["config"], index)
        g.dtypes = d.get("dtypes")
        if "multi" in d:
            g.multi = MULTI_TRANSFORMS[d["multi"]["type"]].from_dict(d["multi"], g.columns)
        g.chains = [
            [TRANSFORMS[s["type"]].from_dict(s, column=c) for s in chain] for c, chain in zip(g.outputs, d["chains"])
        ]
        return g


def _jsonable_config(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable_config(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable_config(u) for u in v]
    return _jsonable(v)


def _restore_dtype(column: str, x: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return x
    if dtype == "bool":
        return np.round(x) != 0
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        r = np.round(x)
        if not np.isfinite(r).all() or (r < info.min).any() or (r > info.max).any():
            bad = ~np.isfinite(r) | (r < info.min) | (r > info.max)
            raise ValueError(
                f"column {column!r}: inverse gave {_first_bad(r, bad)} which does not fit {dt} "
                "(add a dequantize/categorical/clamp step)"
            )
        return r.astype(dt)
    return x.astype(dt)


class TargetPipeline:
    """Chains of transforms over named columns -> one float32 array ``(n, d)`` and back.

    ``config`` is a list of entries ``{"column": name, "steps": [...]}`` or
    ``{"columns": [names], "steps": [{"type": "stick_breaking"}, ...]}``; the output columns
    follow the entries in order (a ``columns`` entry gives one output per column).
    """

    _deterministic: ClassVar[bool] = False

    def __init__(self, config: Sequence[Mapping[str, Any]]):
        if isinstance(config, Mapping) or not isinstance(config, (list, tuple)):
            raise ValueError(f"pipeline config must be a list of entries, got {type(config).__name__}")
        self.groups = [_Group(cfg, i) for i, cfg in enumerate(config)]
        seen: set[str] = set()
        for g in self.groups:
            for c in g.columns:
                if c in seen:
                    raise ValueError(f"column {c!r} appears twice in the pipeline config")
                seen.add(c)
        self.fitted = False

    @property
    def features(self) -> list[str]:
        """Names of the model-space features, in array order."""
        return [c for g in self.groups for c in g.outputs]

    @property
    def config(self) -> list[dict[str, Any]]:
        """The entries it was built from, as JSON values (to compare a fitted pipeline with a spec)."""
        return [_jsonable_config(g.config) for g in self.groups]

    @property
    def references(self) -> list[str]:
        """Reference columns the pipeline reads (must be passed as ``refs``)."""
        return sorted(set().union(*(g.references for g in self.groups))) if self.groups else []

    @property
    def n_features(self) -> int:
        return len(self.features)

    def fit(self, targets: Mapping[str, Any], refs: Mapping[str, Any] | None = None,
            rng: np.random.Generator | None = None) -> "TargetPipeline":
        """Fit every step in order on training columns (noise in later steps' inputs uses ``rng``)."""
        if rng is None and not self._deterministic:
            rng = np.random.default_rng(0)
        for g in self.groups:
            g.fit(targets, refs or {}, None if self._deterministic else rng)
        self.fitted = True
        return self

    def forward(self, targets: Mapping[str, Any], refs: Mapping[str, Any] | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """Columns -> float32 ``(n, d)``; ``rng`` draws dequantisation noise (None: midpoints)."""
        if not self.fitted:
            raise ValueError("pipeline used before fit")
        cols = [y for g in self.groups for y in g.forward(targets, refs or {}, rng)]
        if not cols:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.stack(cols, axis=1)
        if not np.isfinite(out).all():
            j = int(np.flatnonzero(~np.isfinite(out).all(axis=0))[0])
            raise ValueError(f"column {self.features[j]!r}: forward produced non-finite values")
        return out.astype(np.float32)

    def inverse(self, array: Any, refs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``(n, d)`` model-space array -> dict of columns with their training dtypes."""
        if not self.fitted:
            raise ValueError("pipeline used before fit")
        a = np.asarray(array, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.n_features:
            raise ValueError(f"inverse expects shape (n, {self.n_features}), got {a.shape}")
        if not np.isfinite(a).all():
            j = int(np.flatnonzero(~np.isfinite(a).all(axis=0))[0])
            raise ValueError(f"column {self.features[j]!r}: inverse got non-finite model output")
        out: dict[str, np.ndarray] = {}
        j = 0
        for g in self.groups:
            k = len(g.outputs)
            out.update(g.inverse([a[:, j + i] for i in range(k)], refs or {}))
            j += k
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "version": 1, "fitted": self.fitted,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TargetPipeline":
        if not isinstance(d, Mapping) or d.get("version") != 1 or "groups" not in d:
            raise ValueError("not a serialised flashsim pipeline (version 1)")
        obj = cls([g["config"] for g in d["groups"]])
        obj.groups = [_Group.from_dict(g, i) for i, g in enumerate(d["groups"])]
        obj.fitted = bool(d.get("fitted", True))
        return obj


class ContextPipeline(TargetPipeline):
    """The same chains for conditioning columns; forward is deterministic (no noise)."""

    _deterministic = True

    def forward(self, targets, refs=None, rng=None) -> np.ndarray:  # type: ignore[override]
        return super().forward(targets, refs, None)

    @classmethod
    def standard(cls, columns: Sequence[str], log_columns: Sequence[str] = ()) -> "ContextPipeline":
        """Standardise every column, after a log for the ``log_columns`` (pt-like)."""
        logs = set(log_columns)
        unknown = logs - set(columns)
        if unknown:
            raise ValueError(f"log_columns {sorted(unknown)} are not among the columns")
        return cls([
            {"column": c, "steps": ([{"type": "log"}] if c in logs else []) + [{"type": "standardize"}]}
            for c in columns
        ])
