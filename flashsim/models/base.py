"""The model interface: ``loss(targets, context)`` to train, ``sample(context, noise)`` to draw.

Every model type is a :class:`ConditionalModel` registered under ``config["type"]``;
:func:`build_model` turns a JSON-able config into a fresh model. Weights are plain tensors
(``state_dict``), so a model is fully described by ``config`` + a safetensors file.
"""

from __future__ import annotations

import abc
import builtins
import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from flashsim.errors import ConfigError, FlashsimError, UnitError
from flashsim.registry import Registry, suggest
from flashsim.streams import Noise, as_noise

if TYPE_CHECKING:
    from flashsim.models.efficiency import EfficiencyModel

__all__ = ["ConditionalModel", "SamplingError", "MODELS", "PRECISIONS", "build_model", "check_model_config", "evaluating",
           "precision_dtype"]

#: sampling precisions of a coupling flow's conditioner networks (``load_unit(precision=...)``, ``--precision``); the spline,
#: the mixing layers and every other model type stay float32. bfloat16 is faster where matrix products are (AMX CPUs, GPUs).
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def precision_dtype(precision: str) -> torch.dtype:
    """The conditioner dtype of a precision named in :data:`PRECISIONS`; a :class:`ConfigError` for any other name."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}{suggest(str(precision), PRECISIONS)}")
    return PRECISIONS[precision]


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; the mode is switched (a walk over every submodule) only when training."""
    training = module.training
    if training:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if training:
            module.train()


class SamplingError(FlashsimError, RuntimeError):
    """Sampling produced values a unit cannot write: non-finite after the allowed redraws, or outside its declared ranges."""


class ConditionalModel(nn.Module, abc.ABC):
    """A conditional generative model ``p(targets | context)``.

    Subclasses set ``type`` and ``defaults`` and implement :meth:`loss` and :meth:`_draw`.
    :meth:`sample` wraps ``_draw`` with the redraw guard: rows that come out non-finite
    (or batches whose draw raises a numerical error) are redrawn, at most ``max_redraws``
    times, before :class:`SamplingError` is raised. NaN/inf never leave :meth:`sample`.
    """

    # ``type`` is the registry name of the model class. It shadows the method nn.Module.type(dst_type)
    # (a dtype cast nobody calls on these models), so each class that sets it needs one
    # ``# type: ignore[assignment]``; inside class bodies the builtin is spelled ``builtins.type``.
    type: ClassVar[str] = ""  # type: ignore[assignment]
    defaults: ClassVar[dict[str, Any]] = {}
    common_keys: ClassVar[frozenset[str]] = frozenset({"type", "name", "max_redraws"})
    #: exceptions from the numerics of a draw that trigger a redraw (subclasses extend)
    numerical_errors: ClassVar[tuple[builtins.type[BaseException], ...]] = (AssertionError,)

    def __init__(self, config: Mapping[str, Any], n_targets: int, n_context: int):
        super().__init__()
        cfg = dict(config)
        cfg.setdefault("type", self.type)
        if cfg["type"] != self.type:
            raise UnitError(f"config type {cfg['type']!r} given to model class {self.type!r}")
        check_model_config(cfg, f"model {self.type!r}")
        full = {"type": self.type, **copy.deepcopy(self.defaults), "max_redraws": 10}
        full.update(cfg)
        if int(n_targets) < 1 or int(n_context) < 0:
            raise UnitError(f"model {self.type!r}: need n_targets >= 1 and n_context >= 0, got {n_targets}, {n_context}")
        self.config: dict[str, Any] = full
        self.n_targets = int(n_targets)
        self.n_context = int(n_context)
        self.name: str = str(full.get("name") or self.type)
        self.precision = "float32"  # of a coupling flow's conditioners when sampling (a name in PRECISIONS)

    # -- interface ----------------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, targets: Tensor, context: Tensor) -> Tensor:
        """Scalar mean training loss for a batch ``targets (n, d)`` given ``context (n, c)``."""

    @abc.abstractmethod
    def _draw(self, context: Tensor, noise: Noise, draw: int) -> Tensor:
        """One raw draw ``(n, d)`` for ``context (n, c)`` from ``noise`` (``draw``: which redraw); may contain NaN/inf or raise."""

    # -- sampling with the redraw guard -------------------------------------------------
    def _draw_split(self, context: Tensor, noise: Noise, draw: int) -> Tensor:
        """Draw; if the numerics raise, redraw in halves, down to NaN rows for single failures."""
        try:
            return self._draw(context, noise, draw)
        except self.numerical_errors:
            n = context.shape[0]
            if n <= 1:
                return torch.full((n, self.n_targets), float("nan"), device=context.device)
            half = n // 2
            return torch.cat([self._draw_split(context[:half], noise.subset(slice(0, half)), draw),
                              self._draw_split(context[half:], noise.subset(slice(half, n)), draw)])

    def sample(self, context: Tensor, source: Noise | torch.Generator) -> Tensor:
        """Draw ``(n, d)`` targets for ``context (n, c)``, all randomness from ``source``: keyed per row
        (:class:`flashsim.streams.RowNoise`, as the chain draws) or a ``torch.Generator``.

        Runs without gradients and in eval mode (the previous mode is restored).
        """
        noise = as_noise(source)
        if context.dim() != 2 or context.shape[1] != self.n_context:
            raise UnitError(f"model {self.name!r}: context must have shape (n, {self.n_context}), got {tuple(context.shape)}")
        with evaluating(self):
            out = self._draw_split(context, noise, 0)
            bad = ~torch.isfinite(out).all(dim=1)
            tries = 0
            while bool(bad.any()):
                if tries >= int(self.config["max_redraws"]):
                    raise SamplingError(
                        f"model {self.name!r} ({self.type}): {int(bad.sum())} of {out.shape[0]} rows still "
                        f"non-finite after {tries} redraws"
                    )
                idx = bad.nonzero(as_tuple=True)[0]
                tries += 1
                out[idx] = self._draw_split(context[idx], noise.subset(idx), tries).to(out.dtype)
                bad = ~torch.isfinite(out).all(dim=1)
        return out

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"name={self.name!r}, n_targets={self.n_targets}, n_context={self.n_context}"


#: the efficiency classifier is registered here too but is not a ConditionalModel (no redraw guard)
MODELS: Registry[type[ConditionalModel | EfficiencyModel]] = Registry("model type")


def build_model(config: Mapping[str, Any], n_targets: int, n_context: int) -> ConditionalModel | EfficiencyModel:
    """A fresh model of type ``config["type"]`` for ``n_targets`` targets and ``n_context`` context features."""
    from flashsim import models as _models  # noqa: F401  (registers the built-in types)

    check_model_config(config)
    return MODELS.get(config["type"], "model")(config, n_targets, n_context)


def check_model_config(config: Mapping[str, Any], where: str = "model") -> None:
    """Refuse a model table with no or an unknown ``type`` or with an option its type does not take."""
    from flashsim import models as _models  # noqa: F401  (registers the built-in types)

    if not isinstance(config, Mapping) or "type" not in config:
        raise UnitError(f"{where}: needs a 'type' (one of {MODELS.names()}), got {config!r}")
    cls = MODELS.get(config["type"], where)
    known = set(cls.defaults) | set(cls.common_keys)
    for key in config:
        if key not in known:
            raise UnitError(f"{where}: unknown option {key!r}{suggest(key, known)} for model type {cls.type!r} (valid: {sorted(known)})")
