"""The mean + quantile regressor of Chen et al. (2021), "Data-driven fast simulation ...".

Two MLPs read the context: one predicts the central value mu (trained with MAE, so the
median), one the +1 sigma quantile q (pinball loss, gamma = 0.841). Samples are
mu + |q - mu| * eps with eps ~ N(0, 1): a Gaussian smearing with learnt, context-dependent
scale. The integrator chooses what to feed: typically context = gen features and targets =
the reco features in the same (transformed) space.

Architecture as the paper: "a six-layer dense neural network; the first and last layers have
nine nodes each [the number of features], the intermediate layers 100 nodes; LeakyReLU
(alpha = 0.05) on all layers but the last" -- i.e. n_in -> n_in -> 100 x 4 -> n_out, which is
``input_layer = true`` with the default ``hidden = 100, layers = 4`` (flashsim/zoo/wjet_regressor). The
extra input-wide layer is off by default: with few context features (e.g. one) it is a bottleneck.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor, nn

from flashsim.errors import UnitError
from flashsim.models.base import MODELS, ConditionalModel
from flashsim.streams import Noise

__all__ = ["MeanQuantile", "mlp", "pinball_loss"]


def mlp(n_in: int, n_out: int, hidden: int, layers: int, negative_slope: float, dropout: float = 0.0) -> nn.Sequential:
    """n_in -> hidden x layers (LeakyReLU) -> n_out (linear)."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LeakyReLU(negative_slope)]
        if dropout > 0:
            mods.append(nn.Dropout(dropout))
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


def pinball_loss(pred: Tensor, target: Tensor, gamma: float) -> Tensor:
    """Mean quantile (pinball) loss: minimised by the gamma-quantile of target."""
    diff = target - pred
    return torch.maximum(gamma * diff, (gamma - 1.0) * diff).mean()


@MODELS.register
class MeanQuantile(ConditionalModel):
    """mu(x) + sigma(x) * eps, sigma = |q(x) - mu(x)|; loss = MAE(mu) + pinball_gamma(q)."""

    type = "mean_quantile"
    defaults: ClassVar[dict[str, Any]] = {"hidden": 100, "layers": 4, "negative_slope": 0.05, "gamma": 0.841, "dropout": 0.0,
                                "input_layer": False}

    def __init__(self, config: Mapping[str, Any], n_targets: int, n_context: int):
        super().__init__(config, n_targets, n_context)
        c = self.config
        if not 0.5 < float(c["gamma"]) < 1.0:
            raise UnitError(f"model {self.name!r}: gamma must be in (0.5, 1), got {c['gamma']}")
        if self.n_context < 1:
            raise UnitError(f"model {self.name!r}: mean_quantile needs at least one context feature")
        args = (self.n_context, self.n_targets, int(c["hidden"]), int(c["layers"]), float(c["negative_slope"]), float(c["dropout"]))
        self.mean_net = self._net(args, bool(c["input_layer"]))
        self.quantile_net = self._net(args, bool(c["input_layer"]))

    @staticmethod
    def _net(args: tuple, input_layer: bool) -> nn.Sequential:
        """The paper's first dense layer as wide as the input (LeakyReLU), then :func:`mlp`."""
        net = mlp(*args)
        if not input_layer:
            return net
        n_in, slope = args[0], args[4]
        return nn.Sequential(nn.Linear(n_in, n_in), nn.LeakyReLU(slope), *net)

    def predict(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, sigma) for each context row."""
        mu = self.mean_net(context)
        return mu, (self.quantile_net(context) - mu).abs()

    def loss(self, targets: Tensor, context: Tensor) -> Tensor:
        mu = self.mean_net(context)
        q = self.quantile_net(context)
        return (targets - mu).abs().mean() + pinball_loss(q, targets, float(self.config["gamma"]))

    def _draw(self, context: Tensor, noise: Noise, draw: int) -> Tensor:
        mu, sigma = self.predict(context)
        eps = noise.normal(mu.shape[0], mu.shape[1], draw, mu.device, mu.dtype)
        return mu + sigma * eps
