"""The transform interfaces: one invertible step on one column (:class:`Transform`), a joint step on
several columns (:class:`MultiColumnTransform`), and their registries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from flashsim.errors import TransformError
from flashsim.registry import Registry, suggest

__all__ = ["Transform", "MultiColumnTransform", "TRANSFORMS", "MULTI_TRANSFORMS", "transform_from_config"]

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
    reads_drawn: ClassVar[bool] = False  # reads other target columns (of earlier entries) through ``basis``

    def __init__(self, column: str = "?", reference: str | None = None, **params: Any):
        self.column = column
        self.reference = reference
        known = set(self.params) | ({"reference"} if self.uses_reference else set())
        for key in params:
            if key not in self.params:
                raise TransformError(
                    f"column {column!r}: unknown option {key!r}{suggest(key, known)} for step {self.type!r} "
                    f"(known: {sorted(known)})"
                )
        if self.uses_reference and reference is None:
            raise TransformError(f"column {column!r}: step {self.type!r} needs a 'reference' column")
        if not self.uses_reference and reference is not None:
            raise TransformError(f"column {column!r}: step {self.type!r} takes no 'reference'")
        for key, default in self.params.items():
            if key not in params and default is _REQUIRED:
                raise TransformError(f"column {column!r}: step {self.type!r} needs option {key!r}")
            setattr(self, key, params.get(key, default))
        self.is_fitted = not self.fitted
        self._check_params()

    # -- to override -------------------------------------------------------------------
    def _check_params(self) -> None:
        pass

    @property
    def drawn_names(self) -> frozenset[str]:
        """Target columns of earlier entries the step reads (``reads_drawn`` steps)."""
        return frozenset()

    def basis(self, drawn: Mapping[str, Any], n: int) -> np.ndarray:
        """The reference array a ``reads_drawn`` step takes, from ``n`` rows of the other target columns ``drawn``."""
        raise NotImplementedError

    def _fit(self, x: np.ndarray, ref: np.ndarray | None) -> None:
        pass

    def _check_domain(self, x: np.ndarray, ref: np.ndarray | None) -> None:
        pass

    def _forward(self, x: np.ndarray, ref: np.ndarray | None, rng: np.random.Generator | None) -> np.ndarray:
        raise NotImplementedError

    def _inverse(self, y: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------
    def _err(self, what: str) -> TransformError:
        return TransformError(f"column {self.column!r}, step {self.type!r}: {what}")

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


def _logit(u: np.ndarray) -> np.ndarray:
    return np.log(u) - np.log1p(-u)


def _sigmoid(y: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * y))  # stable for large |y|


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
    if isinstance(v, Mapping):
        return {str(k): _jsonable(u) for k, u in v.items()}
    return v



# multi-column transforms
# ----------------------------------------------------------------------------------------


class MultiColumnTransform:
    """A step that maps k columns jointly to model features (first step of a ``columns`` group)."""

    type: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()  # the options its constructor takes

    def __init__(self, columns: Sequence[str], **params: Any):
        self.columns = list(columns)
        if params:
            key = sorted(params)[0]
            raise TransformError(f"columns {self.columns}: unknown option {key!r}{suggest(key, self.options)} for step {self.type!r} "
                                 f"(known: {sorted(self.options)})")

    @property
    def references(self) -> list[str]:
        """Reference columns the step reads (passed to forward/inverse as ``refs``)."""
        return []

    @property
    def outputs(self) -> list[str]:
        """Names of the features it gives: one per column unless some columns follow from the others."""
        return list(self.columns)

    def fit(self, xs: list[np.ndarray], refs: list[np.ndarray]) -> "MultiColumnTransform":  # noqa: ARG002  (a joint step with nothing to fit)
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



TRANSFORMS: Registry[type[Transform]] = Registry("transform")
MULTI_TRANSFORMS: Registry[type[MultiColumnTransform]] = Registry("multi-column transform")


def transform_from_config(cfg: Mapping[str, Any], column: str = "?") -> Transform:
    """Build an (unfitted) elementary transform from ``{"type": ..., **options}``."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise TransformError(f"column {column!r}: each step needs a 'type', got {cfg!r}")
    kind = cfg["type"]
    if kind not in TRANSFORMS:
        known = TRANSFORMS.names() + MULTI_TRANSFORMS.names()
        raise TransformError(f"column {column!r}: unknown step type {kind!r}{suggest(kind, known)} (known: {known})")
    opts = {k: v for k, v in cfg.items() if k != "type"}
    return TRANSFORMS.get(kind)(column=column, **opts)


# ----------------------------------------------------------------------------------------
