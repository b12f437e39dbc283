"""Efficiency: is a GEN object reconstructed? A small MLP classifier with Platt calibration.

Trained with BCE on (context, reconstructed?) pairs; :meth:`EfficiencyModel.calibrate`
fits ``p = sigmoid(a * logit + b)`` on held-out data (two numbers, stored as buffers so they
travel in the state dict). :meth:`EfficiencyModel.sample` draws the boolean decision with
the caller's ``torch.Generator``.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from flashsim.errors import UnitError
from flashsim.models.base import MODELS, check_model_config, evaluating
from flashsim.models.mean_quantile import mlp
from flashsim.streams import Noise, as_noise

__all__ = ["EfficiencyModel"]


@MODELS.register
class EfficiencyModel(nn.Module):
    """p(reconstructed | context) from an MLP (LeakyReLU), calibrated by Platt scaling."""

    type: ClassVar[str] = "efficiency"  # type: ignore[assignment]  # shadows nn.Module.type, see base.py
    defaults: ClassVar[dict[str, Any]] = {"hidden": 64, "layers": 3, "negative_slope": 0.05, "dropout": 0.0}
    common_keys: ClassVar[frozenset[str]] = frozenset({"type", "name"})
    platt_a: Tensor  # registered buffers (Platt scale and offset)
    platt_b: Tensor

    def __init__(self, config: Mapping[str, Any], n_targets: int = 1, n_context: int = 1):
        super().__init__()
        cfg = dict(config)
        cfg.setdefault("type", self.type)
        check_model_config(cfg, "model 'efficiency'")
        if int(n_targets) != 1:
            raise UnitError(f"model 'efficiency' has exactly one (boolean) target, got n_targets={n_targets}")
        if int(n_context) < 1:
            raise UnitError("model 'efficiency' needs at least one context feature")
        self.config = {"type": self.type, **copy.deepcopy(self.defaults), **cfg}
        self.n_targets, self.n_context = 1, int(n_context)
        self.name = str(self.config.get("name") or self.type)
        c = self.config
        self.net = mlp(self.n_context, 1, int(c["hidden"]), int(c["layers"]), float(c["negative_slope"]), float(c["dropout"]))
        self.register_buffer("platt_a", torch.ones(()))
        self.register_buffer("platt_b", torch.zeros(()))

    def logits(self, context: Tensor) -> Tensor:
        """Calibrated logits, shape (n,)."""
        return self.platt_a * self.net(context).squeeze(-1) + self.platt_b

    def loss(self, targets: Tensor, context: Tensor) -> Tensor:
        """BCE of the raw (uncalibrated) network; ``targets`` is (n,) or (n, 1) of 0/1."""
        raw = self.net(context).squeeze(-1)
        return F.binary_cross_entropy_with_logits(raw, targets.reshape(-1).to(raw.dtype))

    def probability(self, context: Tensor) -> Tensor:
        """Calibrated p(reconstructed), shape (n,)."""
        return torch.sigmoid(self.logits(context))

    def sample(self, context: Tensor, source: Noise | torch.Generator) -> Tensor:
        """Boolean (n,) decisions, u < p with u from ``source`` (keyed rows or a generator); no gradients, eval mode."""
        with evaluating(self):
            p = self.probability(context)
            return as_noise(source).uniform(p.shape[0], 0, p.device, p.dtype) < p

    def calibrate(self, context: Tensor, targets: Tensor, steps: int = 100) -> tuple[float, float]:
        """Fit the Platt parameters (a, b) on validation data by BCE (LBFGS); returns them."""
        with evaluating(self):
            raw = self.net(context).squeeze(-1)
        y = targets.reshape(-1).to(raw.dtype)
        a = torch.ones((), requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.LBFGS([a, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(a * raw + b, y)
            loss.backward()
            return loss

        opt.step(closure)
        a, b = a.detach(), b.detach()
        if not (torch.isfinite(a) and torch.isfinite(b)):
            raise UnitError(f"model {self.name!r}: Platt calibration diverged")
        with torch.no_grad():
            self.platt_a.fill_(float(a))
            self.platt_b.fill_(float(b))
        return float(a), float(b)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
