"""Conditional rational-quadratic-spline flows (nflows): masked autoregressive and coupling.

``maf_rqs`` is FlashSim's choice (d network passes to sample); ``coupling_rqs`` needs one
network pass per layer and samples much faster. Base noise is drawn from the caller's
``torch.Generator`` and pushed through the flow's inverse ourselves (nflows' ``sample``
uses the global RNG).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from nflows.distributions.normal import StandardNormal
from nflows.flows.base import Flow
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import (
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
)
from nflows.transforms.base import CompositeTransform, InputOutsideDomain
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.lu import LULinear
from nflows.transforms.permutations import Permutation
from torch import Tensor
from torch.nn import functional as F
from typing_extensions import override

from flashsim.errors import UnitError
from flashsim.models.base import MODELS, ConditionalModel, precision_dtype
from flashsim.models.spline_inverse import sample_inverse
from flashsim.streams import Noise

__all__ = ["MafRQS", "CouplingRQS"]

_FLOW_DEFAULTS: dict[str, Any] = {
    "layers": 5,  # number of spline transforms
    "hidden": 128,  # hidden units of each conditioner network
    "blocks": 2,  # residual blocks per conditioner
    "bins": 8,  # spline bins
    "tail_bound": 6.0,  # spline acts on [-B, B]; outside it the map is the identity, so the mass
    # beyond B is the Gaussian tail: keep (standardised) targets inside B
    "dropout": 0.0,
    "batch_norm": False,
    # between spline transforms: a fixed "permutation", or "lu": the permutation then a learned
    # invertible linear map (LU-factorised, identity at start), so the splines can act along
    # whichever directions the targets' structure follows (e.g. the bands of correlated scores)
    "mixing": "permutation",
}

_ACTIVATIONS = {"relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu, "silu": F.silu}


def _permutation(d: int, seed: int) -> Permutation:
    """A fixed pseudo-random permutation (deterministic at build time; stored as a buffer)."""
    perm = np.random.default_rng(seed).permutation(d) if d > 1 else np.zeros(1, dtype=np.int64)
    return Permutation(torch.as_tensor(perm, dtype=torch.long))


class _LULinear(LULinear):
    """nflows' LU-factorised linear map, inverted with ``torch.linalg.solve_triangular``
    (nflows calls the deprecated ``torch.triangular_solve``)."""

    def inverse_no_cache(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        lower, upper = self._create_lower_upper()
        outputs = torch.linalg.solve_triangular(lower, (inputs - self.bias).t(), upper=False, unitriangular=True)
        outputs = torch.linalg.solve_triangular(upper, outputs, upper=True).t()
        return outputs, -self.logabsdet() * inputs.new_ones(outputs.shape[0])


class _FlowModel(ConditionalModel):
    defaults = {**_FLOW_DEFAULTS, "activation": "relu"}
    numerical_errors = (AssertionError, InputOutsideDomain)

    def __init__(self, config: Mapping[str, Any], n_targets: int, n_context: int):
        super().__init__(config, n_targets, n_context)
        c = self.config
        if c["activation"] not in _ACTIVATIONS:
            raise UnitError(f"model {self.name!r}: unknown activation {c['activation']!r} (known: {sorted(_ACTIVATIONS)})")
        if c["mixing"] not in ("permutation", "lu"):
            raise UnitError(f"model {self.name!r}: mixing must be 'permutation' or 'lu', got {c['mixing']!r}")
        for key in ("layers", "hidden", "blocks", "bins"):
            if int(c[key]) < 1:
                raise UnitError(f"model {self.name!r}: {key} must be >= 1, got {c[key]}")
        layers = []
        for i in range(int(c["layers"])):
            layers.append(self._layer(i))
            if i < int(c["layers"]) - 1:
                layers.append(_permutation(self.n_targets, seed=1000 + i))
                if c["mixing"] == "lu" and self.n_targets > 1:
                    layers.append(_LULinear(self.n_targets, identity_init=True))
        self.flow = Flow(CompositeTransform(layers), StandardNormal([self.n_targets]))

    def _layer(self, i: int):
        raise NotImplementedError

    def _ctx(self, context: Tensor) -> Tensor | None:
        return context if self.n_context > 0 else None

    def loss(self, targets: Tensor, context: Tensor) -> Tensor:
        """Mean negative log-likelihood."""
        return -self.flow.log_prob(targets, context=self._ctx(context)).mean()

    def log_prob(self, targets: Tensor, context: Tensor) -> Tensor:
        return self.flow.log_prob(targets, context=self._ctx(context))

    def _draw(self, context: Tensor, noise: Noise, draw: int) -> Tensor:
        base = noise.normal(context.shape[0], self.n_targets, draw, context.device, context.dtype)
        ctx = self._ctx(context)
        embedded = self.flow._embedding_net(ctx) if ctx is not None else None
        samples = sample_inverse(self.flow._transform, base, embedded, precision_dtype(self.precision))
        return samples


@MODELS.register
class MafRQS(_FlowModel):
    """Masked autoregressive RQ-spline flow (FlashSim): exact, d sequential passes to sample."""

    type = "maf_rqs"  # type: ignore[assignment]  # shadows nn.Module.type, see base.py

    @override
    def _layer(self, i: int):
        c = self.config
        return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features=self.n_targets,
            hidden_features=int(c["hidden"]),
            context_features=self.n_context or None,
            num_bins=int(c["bins"]),
            tails="linear",
            tail_bound=float(c["tail_bound"]),
            num_blocks=int(c["blocks"]),
            use_residual_blocks=True,
            random_mask=False,
            activation=_ACTIVATIONS[c["activation"]],
            dropout_probability=float(c["dropout"]),
            use_batch_norm=bool(c["batch_norm"]),
        )


@MODELS.register
class CouplingRQS(_FlowModel):
    """Coupling RQ-spline flow: half the features condition the other half; one pass per layer."""

    type = "coupling_rqs"  # type: ignore[assignment]  # shadows nn.Module.type, see base.py

    def _layer(self, i: int):
        c = self.config
        d = self.n_targets
        mask = [1] * d if d == 1 else [int((j + i) % 2 == 0) for j in range(d)]

        def net(n_in: int, n_out: int) -> ResidualNet:
            return ResidualNet(
                in_features=n_in,
                out_features=n_out,
                hidden_features=int(c["hidden"]),
                context_features=self.n_context or None,
                num_blocks=int(c["blocks"]),
                activation=_ACTIVATIONS[c["activation"]],
                dropout_probability=float(c["dropout"]),
                use_batch_norm=bool(c["batch_norm"]),
            )

        return PiecewiseRationalQuadraticCouplingTransform(
            mask=mask,
            transform_net_create_fn=net,
            num_bins=int(c["bins"]),
            tails="linear",
            tail_bound=float(c["tail_bound"]),
        )
