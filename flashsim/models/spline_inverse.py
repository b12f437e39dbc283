"""The inverse of a flow for sampling only: no log-determinant, and for rational-quadratic coupling layers no
masked scatter/gather (nflows splits the rows inside and outside the spline interval with boolean indexing;
here every row goes through the spline clamped into the interval and the tail rows are chosen after).
The conditioner projects the context for its first layer and every gate in one matrix product and gates by
multiplication (no concatenation); the spline normalises widths and heights in one pass, searches the bins
with one ``searchsorted`` and gathers the rest per row. On a CPU the rows go through in blocks whose
activations stay in the cores' caches. Equal to nflows' inverse within float tolerance (tests/test_models.py); training
keeps nflows. Layers of any other kind use nflows' own inverse. The conditioners may run in bfloat16 (their weights cast
once per call; the spline, its bin search and the mixing layers stay in the noise's float32): on CPUs with AMX and on
GPUs their matrix products then run several times faster, and the samples move by bfloat16's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from nflows.nn.nets.resnet import ResidualNet
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from torch import Tensor
from torch.nn import functional as F

__all__ = ["sample_inverse", "rq_spline_inverse", "CPU_BLOCK"]

CPU_BLOCK = 2048  # rows per pass and CPU thread: a conditioner's activations (rows x hidden floats) stay in a core's cache

_Step = Callable[[Tensor, Tensor | None], Tensor]


def sample_inverse(flow: CompositeTransform, noise: Tensor, context: Tensor | None,
                   conditioner_dtype: torch.dtype = torch.float32) -> Tensor:
    """Push base noise through the inverse of ``flow`` (its layers in reverse order); the coupling layers' conditioner
    networks compute in ``conditioner_dtype`` (nflows' own inverse, used for layers of other kinds, in the noise's)."""
    steps = [_CouplingInverse(layer, conditioner_dtype) if _fast(layer) else _nflows_inverse(layer)
             for layer in reversed(flow._transforms)]
    n = noise.shape[0]
    block = CPU_BLOCK * torch.get_num_threads() if noise.device.type == "cpu" else max(n, 1)
    out = noise if n <= block else torch.empty_like(noise)
    for start in range(0, n, block):
        x = noise[start : start + block]
        ctx = None if context is None else context[start : start + block]
        for step in steps:
            x = step(x, ctx)
        if n <= block:
            return x
        out[start : start + block] = x
    return out


def _nflows_inverse(layer: Transform) -> _Step:
    return lambda x, context: layer.inverse(x, context)[0]


def _fast(layer: Transform) -> bool:
    if not (isinstance(layer, PiecewiseRationalQuadraticCouplingTransform) and layer.tails == "linear"
            and layer.unconditional_transform is None):
        return False
    net = layer.transform_net
    return isinstance(net, ResidualNet) and not net.training and not any(block.use_batch_norm for block in net.blocks)


class _CouplingInverse:
    """The inverse of one rational-quadratic coupling layer with nflows' ResidualNet conditioner (eval mode, no
    batch norm), its weights arranged (and cast to ``dtype``) once per sampling call: the context's share of the initial
    layer and every block's gate projection stacked; the final layer's rows regrouped into [widths | heights] (divided
    by sqrt(hidden), as nflows does) and inner derivatives, each contiguous per transformed feature."""

    def __init__(self, layer: PiecewiseRationalQuadraticCouplingTransform, dtype: torch.dtype = torch.float32) -> None:
        net = layer.transform_net
        self.layer, self.size, self.dtype = layer, net.hidden_features, dtype
        self.n_in = layer.num_identity_features
        initial = net.initial_layer
        self.input_weight, self.input_bias = initial.weight[:, : self.n_in].t().to(dtype), initial.bias.to(dtype)
        if net.context_features is not None:
            self.context_weight = torch.cat([initial.weight[:, self.n_in :]] + [b.context_layer.weight for b in net.blocks]).t().to(dtype)
            self.context_bias = torch.cat([initial.bias] + [b.context_layer.bias for b in net.blocks]).to(dtype)
        self.blocks = [(first.weight.t().to(dtype), first.bias.to(dtype), second.weight.t().to(dtype), second.bias.to(dtype))
                       for first, second in (block.linear_layers for block in net.blocks)]
        self.activations = [block.activation for block in net.blocks]
        features, bins = layer.num_transform_features, layer.num_bins
        weight = net.final_layer.weight.view(features, 3 * bins - 1, -1)
        bias = net.final_layer.bias.view(features, 3 * bins - 1)
        scale = 1 / math.sqrt(self.size)
        self.spline_weight = (weight[:, : 2 * bins].reshape(features, 2, bins, -1).transpose(0, 1).reshape(2 * features * bins, -1)
                              * scale).t().to(dtype)
        self.spline_bias = (bias[:, : 2 * bins].reshape(features, 2, bins).transpose(0, 1).reshape(-1) * scale).to(dtype)
        self.derivative_weight = weight[:, 2 * bins :].reshape(features * (bins - 1), -1).t().to(dtype)
        self.derivative_bias = bias[:, 2 * bins :].reshape(-1).to(dtype)

    def __call__(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        layer = self.layer
        identity = inputs[:, layer.identity_features]
        widths_heights, derivatives = self.spline_parameters(identity, context)
        transformed = _spline_inverse(inputs[:, layer.transform_features], widths_heights, derivatives, layer.tail_bound,
                                      layer.min_bin_width, layer.min_bin_height, layer.min_derivative)
        outputs = torch.empty_like(inputs)
        outputs[:, layer.identity_features] = identity
        outputs[:, layer.transform_features] = transformed
        return outputs

    def spline_parameters(self, identity: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """The conditioner's output in the inputs' dtype: unnormalised widths and heights ``(n, 2, features, bins)``
        and inner derivatives ``(n, features, bins - 1)``."""
        layer, n = self.layer, identity.shape[0]
        hidden = self._hidden(identity.to(self.dtype), None if context is None else context.to(self.dtype))
        features, bins = layer.num_transform_features, layer.num_bins
        widths_heights = torch.addmm(self.spline_bias, hidden, self.spline_weight).view(n, 2, features, bins)
        derivatives = torch.addmm(self.derivative_bias, hidden, self.derivative_weight).view(n, features, bins - 1)
        return widths_heights.to(identity.dtype), derivatives.to(identity.dtype)

    def _hidden(self, inputs: Tensor, context: Tensor | None) -> Tensor:
        """nflows' ResidualNet up to its final layer; GLU as ``x * sigmoid(gate)``."""
        size = self.size
        if context is None:
            hidden = torch.addmm(self.input_bias, inputs, self.input_weight)
        else:
            projected = torch.addmm(self.context_bias, context, self.context_weight)
            hidden = torch.addmm(projected[:, :size], inputs, self.input_weight)
            gates = projected[:, size:].sigmoid_()
        for i, ((first_weight, first_bias, second_weight, second_bias), activation) in enumerate(zip(self.blocks, self.activations)):
            temps = torch.addmm(first_bias, activation(hidden), first_weight)
            temps = torch.relu_(temps) if activation is F.relu else activation(temps)
            temps = torch.addmm(second_bias, temps, second_weight)
            if context is not None:
                temps.mul_(gates[:, i * size : (i + 1) * size])
            hidden = hidden.add_(temps)
        return hidden


def rq_spline_inverse(y: Tensor, unnormalized_widths: Tensor, unnormalized_heights: Tensor, unnormalized_derivatives: Tensor,
                      bound: float, min_bin_width: float, min_bin_height: float, min_derivative: float) -> Tensor:
    """Inverse of nflows' ``unconstrained_rational_quadratic_spline`` with linear tails on [-bound, bound]
    (identity outside); a row whose quadratic has no real root comes out NaN, which the caller redraws."""
    stacked = torch.stack([unnormalized_widths, unnormalized_heights], dim=-3)
    return _spline_inverse(y, stacked, unnormalized_derivatives, bound, min_bin_width, min_bin_height, min_derivative)


def _spline_inverse(y: Tensor, widths_heights: Tensor, unnormalized_derivatives: Tensor, bound: float,
                    min_bin_width: float, min_bin_height: float, min_derivative: float) -> Tensor:
    """:func:`rq_spline_inverse` with the unnormalised widths and heights stacked, ``(..., 2, features, bins)``."""
    bins = widths_heights.shape[-1]
    yc = y.clamp(-bound, bound)
    # cumulative bin sizes, widths then heights: the softmax spelled out (torch's kernel is slow over 8 bins)
    cdf = (widths_heights - widths_heights.amax(dim=-1, keepdim=True)).exp_().cumsum_(dim=-1)
    cdf = cdf.div_(cdf[..., -1:])
    inner = torch.arange(1, bins, device=y.device, dtype=y.dtype) * (min_bin_height * 2 * bound) - bound
    inner_knots = torch.add(inner, cdf[..., 1, :, :-1], alpha=(1 - min_bin_height * bins) * 2 * bound)
    bin_index = torch.searchsorted(inner_knots, yc.unsqueeze(-1), right=True).squeeze(-1)  # the knots at or below y
    knots = torch.stack([bin_index, bin_index + 1], dim=-1)  # (..., features, 2): the bin's two ends
    below = cdf.gather(-1, (knots - 1).clamp_(min=0).unsqueeze(-3).expand(*cdf.shape[:-1], 2))
    min_size = torch.tensor([min_bin_width, min_bin_height], device=y.device, dtype=y.dtype).view(2, 1, 1)
    ends = (knots.unsqueeze(-3) * min_size + below * (1 - min_size * bins)) * (2 * bound) - bound
    ends = torch.where(knots.unsqueeze(-3) == 0, -bound, torch.where(knots.unsqueeze(-3) == bins, bound, ends))
    x0, w = ends[..., 0, :, 0], ends[..., 0, :, 1] - ends[..., 0, :, 0]
    y0, h = ends[..., 1, :, 0], ends[..., 1, :, 1] - ends[..., 1, :, 0]
    edge = math.log(math.exp(1 - min_derivative) - 1)  # derivative 1 at both ends: the linear tails join smoothly
    outer = min_derivative + F.softplus(torch.tensor(edge, dtype=y.dtype, device=y.device))
    derivative = min_derivative + F.softplus(unnormalized_derivatives.gather(-1, (knots - 1).clamp_(0, bins - 2)))
    derivative = torch.where((knots == 0) | (knots == bins), outer, derivative)
    d0, d1 = derivative[..., 0], derivative[..., 1]

    delta = h / w
    dy = yc - y0
    curvature = d0 + d1 - 2 * delta
    a = dy * curvature + h * (delta - d0)
    b = h * d0 - dy * curvature
    c = -delta * dy
    root = (2 * c) / (-b - torch.sqrt(b * b - 4 * a * c))
    inside = (y >= -bound) & (y <= bound)
    return torch.where(inside, root * w + x0, y)
