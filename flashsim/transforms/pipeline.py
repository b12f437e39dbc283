"""Pipelines: chains of steps over named columns to one float32 model array and back, serialised as JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from typing_extensions import override

from flashsim.errors import TransformError
from flashsim.registry import suggest
from flashsim.transforms.base import (
    MULTI_TRANSFORMS,
    TRANSFORMS,
    MultiColumnTransform,
    Transform,
    _as_float,
    _first_bad,
    _jsonable,
    transform_from_config,
)

__all__ = ["TargetPipeline", "ContextPipeline"]

_ENTRY_KEYS = {"column", "columns", "steps"}


class _Group:
    """One config entry: a column (or a list of columns with a joint first step) + its chain."""

    def __init__(self, cfg: Mapping[str, Any], index: int):
        if not isinstance(cfg, Mapping):
            raise TransformError(f"pipeline entry {index}: expected a table/dict, got {cfg!r}")
        unknown = set(cfg) - _ENTRY_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise TransformError(f"entry [{index}]: unknown key {key!r}{suggest(key, _ENTRY_KEYS)} (valid: {sorted(_ENTRY_KEYS)})")
        if ("column" in cfg) == ("columns" in cfg):
            raise TransformError(f"pipeline entry {index}: give exactly one of 'column' or 'columns'")
        steps = list(cfg.get("steps", []))
        self.config = {k: v for k, v in cfg.items()}
        self.multi: MultiColumnTransform | None = None
        if "column" in cfg:
            if not isinstance(cfg["column"], str):
                raise TransformError(f"pipeline entry {index}: 'column' must be a string, got {cfg['column']!r}")
            self.columns = [cfg["column"]]
        else:
            cols = cfg["columns"]
            if not isinstance(cols, (list, tuple)) or not cols or not all(isinstance(c, str) for c in cols):
                raise TransformError(f"pipeline entry {index}: 'columns' must be a non-empty list of names, got {cols!r}")
            self.columns = list(cols)
            if not steps or not isinstance(steps[0], Mapping) or steps[0].get("type") not in MULTI_TRANSFORMS:
                raise TransformError(
                    f"columns {self.columns}: a 'columns' entry must start with a multi-column step "
                    f"({MULTI_TRANSFORMS.names()})"
                )
            first = dict(steps[0])
            kind = first.pop("type")
            self.multi = MULTI_TRANSFORMS.get(kind)(self.columns, **first)
            steps = steps[1:]
        for s in steps:
            if isinstance(s, Mapping) and s.get("type") in MULTI_TRANSFORMS:
                raise TransformError(
                    f"column(s) {self.columns}: multi-column step {s['type']!r} must be the first step "
                    "of a 'columns = [...]' entry"
                )
        # one independent chain per feature (each fits its own state)
        self.chains: list[list[Transform]] = [
            [transform_from_config(s, column=c) for s in steps] for c in self.outputs
        ]
        self.dtypes: list[str | None] | None = None

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
            raise TransformError(f"columns {self.columns}, step {self.multi.type!r}: reference column {missing[0]!r} not given")
        return [np.asarray(refs[r]) for r in self.multi.references]

    @property
    def drawn_names(self) -> set[str]:
        """Target columns of other entries that its steps read."""
        return set().union(*(t.drawn_names for chain in self.chains for t in chain))

    def _ref(self, t: Transform, refs: Mapping[str, Any], drawn: Mapping[str, Any], x: np.ndarray) -> np.ndarray | None:
        """The reference of step ``t`` on the rows of ``x``: a GEN column of ``refs``, or the basis a step reading the
        other target columns ``drawn`` takes."""
        if t.reads_drawn:
            return t.basis(drawn, len(x))
        if t.reference is None:
            return None
        if refs is None or t.reference not in refs:
            raise TransformError(f"column {t.column!r}, step {t.type!r}: reference column {t.reference!r} not given")
        return refs[t.reference]

    def _inputs(self, targets: Mapping[str, Any]) -> list[np.ndarray]:
        xs = []
        for c in self.columns:
            if c not in targets:
                raise TransformError(f"column {c!r} missing from the inputs (have {sorted(targets)})")
            x = np.asarray(targets[c])
            if x.ndim != 1:
                raise TransformError(f"column {c!r}: expected a 1-D array, got shape {x.shape}")
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
                ref = self._ref(t, refs, targets, x)
                t.fit(x, ref)
                x = t.forward(x, ref, rng)

    def forward(self, targets, refs, rng) -> list[np.ndarray]:
        xs = [_as_float(x) for x in self._inputs(targets)]
        if self.multi is not None:
            xs = self.multi.forward(xs, self._multi_refs(refs))
        out = []
        for x, chain in zip(xs, self.chains):
            for t in chain:
                x = t.forward(x, self._ref(t, refs, targets, x), rng)
            out.append(x)
        return out

    def inverse(self, ys: list[np.ndarray], refs, drawn: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Model-space columns -> this entry's columns; ``drawn``: the columns of the earlier entries, inverted."""
        xs = []
        for y, chain in zip(ys, self.chains):
            x = _as_float(y)
            for t in reversed(chain):
                x = t.inverse(x, self._ref(t, refs, drawn, x))
            xs.append(x)
        if self.multi is not None:
            xs = self.multi.inverse(xs, self._multi_refs(refs))
        return {c: _restore_dtype(c, x, dt) for c, x, dt in zip(self.columns, xs, self.dtypes or [None] * len(xs))}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"columns": list(self.columns), "dtypes": self.dtypes}
        if self.multi is not None:
            d["multi"] = self.multi.to_dict()
        d["chains"] = [[t.to_dict() for t in chain] for chain in self.chains]
        d["config"] = _jsonable(self.config)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], index: int) -> "_Group":
        g = cls(d["config"], index)
        g.dtypes = d.get("dtypes")
        if "multi" in d:
            g.multi = MULTI_TRANSFORMS.get(d["multi"]["type"]).from_dict(d["multi"], g.columns)
        g.chains = [
            [TRANSFORMS.get(s["type"]).from_dict(s, column=c) for s in chain] for c, chain in zip(g.outputs, d["chains"])
        ]
        return g


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
            raise TransformError(
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
            raise TransformError(f"pipeline config must be a list of entries, got {type(config).__name__}")
        self.groups = [_Group(cfg, i) for i, cfg in enumerate(config)]
        seen: set[str] = set()
        for g in self.groups:
            unknown = sorted(g.drawn_names - seen)
            if unknown:
                raise TransformError(f"column(s) {g.columns}: inputs {unknown} are not columns of earlier target entries "
                                     f"(earlier: {sorted(seen)})")
            for c in g.columns:
                if c in seen:
                    raise TransformError(f"column {c!r} appears twice in the pipeline config")
                seen.add(c)
        self.fitted = False

    @property
    def features(self) -> list[str]:
        """Names of the model-space features, in array order."""
        return [c for g in self.groups for c in g.outputs]

    @property
    def config(self) -> list[dict[str, Any]]:
        """The entries it was built from, as JSON values (to compare a fitted pipeline with a spec)."""
        return [_jsonable(g.config) for g in self.groups]

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
            raise TransformError("pipeline used before fit")
        cols = [y for g in self.groups for y in g.forward(targets, refs or {}, rng)]
        if not cols:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.stack(cols, axis=1)
        if not np.isfinite(out).all():
            j = int(np.flatnonzero(~np.isfinite(out).all(axis=0))[0])
            raise TransformError(f"column {self.features[j]!r}: forward produced non-finite values")
        return out.astype(np.float32)

    def inverse(self, array: Any, refs: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``(n, d)`` model-space array -> dict of columns with their training dtypes."""
        if not self.fitted:
            raise TransformError("pipeline used before fit")
        a = np.asarray(array, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.n_features:
            raise TransformError(f"inverse expects shape (n, {self.n_features}), got {a.shape}")
        if not np.isfinite(a).all():
            j = int(np.flatnonzero(~np.isfinite(a).all(axis=0))[0])
            raise TransformError(f"column {self.features[j]!r}: inverse got non-finite model output")
        out: dict[str, np.ndarray] = {}
        j = 0
        for g in self.groups:
            k = len(g.outputs)
            out.update(g.inverse([a[:, j + i] for i in range(k)], refs or {}, out))
            j += k
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "version": 1, "fitted": self.fitted,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TargetPipeline":
        if not isinstance(d, Mapping) or d.get("version") != 1 or "groups" not in d:
            raise TransformError("not a serialised flashsim pipeline (version 1)")
        obj = cls([g["config"] for g in d["groups"]])
        obj.groups = [_Group.from_dict(g, i) for i, g in enumerate(d["groups"])]
        obj.fitted = bool(d.get("fitted", True))
        return obj


class ContextPipeline(TargetPipeline):
    """The same chains for conditioning columns; forward is deterministic (no noise)."""

    _deterministic = True

    @override
    def forward(self, targets, refs=None, rng=None) -> np.ndarray:
        return super().forward(targets, refs, None)

    @classmethod
    def standard(cls, columns: Sequence[str], log_columns: Sequence[str] = ()) -> "ContextPipeline":
        """Standardise every column, after a log for the ``log_columns`` (pt-like)."""
        logs = set(log_columns)
        unknown = logs - set(columns)
        if unknown:
            raise TransformError(f"log_columns {sorted(unknown)} are not among the columns")
        return cls([
            {"column": c, "steps": ([{"type": "log"}] if c in logs else []) + [{"type": "standardize"}]}
            for c in columns
        ])
