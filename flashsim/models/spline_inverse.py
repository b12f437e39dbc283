"""The inverse of a flow for sampling only: no log-determinant, and for rational-quadratic coupling layers no
masked scatter/gather (nflows splits the rows inside and outside the spline interval with boolean indexing;
here every row goes through the spline clamped into the interval and the tail rows are chosen after), and one
fused bin search. Equal to nflows' inverse within float tolerance (tests/test_models.py); training keeps nflows.
Layers of any other kind use nflows' own inverse.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms.base import CompositeTransform, Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from torch import Tensor
from torch.nn import functional as F

__all__ = ["sample_inverse", "rq_spline_inverse"]


def sample_inverse(flow: CompositeTransform, noise: Tensor, context: Tensor | None) -> Tensor:
    """Push base noise through the inverse of ``flow`` (its layers in reverse order)."""
    x = noise
    for layer in reversed(flow._transforms):
        x = _coupling_inverse(layer, x, context) if _fast(layer) else layer.inverse(x, context)[0]
    return x


def _fast(layer: Transform) -> bool:
    return (isinstance(layer, PiecewiseRationalQuadraticCouplingTransform) and layer.tails == "linear"
            and layer.unconditional_transform is None and hasattr(layer.transform_net, "hidden_features"))


def _coupling_inverse(layer: PiecewiseRationalQuadraticCouplingTransform, inputs: Tensor, context: Tensor | None) -> Tensor:
    identity = inputs[:, layer.identity_features]
    params = layer.transform_net(identity, context).reshape(inputs.shape[0], layer.num_transform_features, -1)
    bins = layer.num_bins
    scale = math.sqrt(layer.transform_net.hidden_features)
    transformed = rq_spline_inverse(
        inputs[:, layer.transform_features], params[..., :bins] / scale, params[..., bins : 2 * bins] / scale,
        params[..., 2 * bins :], layer.tail_bound, layer.min_bin_width, layer.min_bin_height, layer.min_derivative)
    outputs = torch.empty_like(inputs)
    outputs[:, layer.identity_features] = identity
    outputs[:, layer.transform_features] = transformed
    return outputs


def rq_spline_inverse(y: Tensor, unnormalized_widths: Tensor, unnormalized_heights: Tensor, unnormalized_derivatives: Tensor,
                      bound: float, min_bin_width: float, min_bin_height: float, min_derivative: float) -> Tensor:
    """Inverse of nflows' ``unconstrained_rational_quadratic_spline`` with linear tails on [-bound, bound]
    (identity outside); a row whose quadratic has no real root comes out NaN, which the caller redraws."""
    bins = unnormalized_widths.shape[-1]
    widths = min_bin_width + (1 - min_bin_width * bins) * F.softmax(unnormalized_widths, dim=-1)
    cumwidths = F.pad(torch.cumsum(widths, dim=-1), (1, 0)) * (2 * bound) - bound
    cumwidths[..., 0], cumwidths[..., -1] = -bound, bound
    heights = min_bin_height + (1 - min_bin_height * bins) * F.softmax(unnormalized_heights, dim=-1)
    cumheights = F.pad(torch.cumsum(heights, dim=-1), (1, 0)) * (2 * bound) - bound
    cumheights[..., 0], cumheights[..., -1] = -bound, bound
    widths = cumwidths[..., 1:] - cumwidths[..., :-1]
    heights = cumheights[..., 1:] - cumheights[..., :-1]
    edge = math.log(math.exp(1 - min_derivative) - 1)  # derivative 1 at both ends: the linear tails join smoothly
    derivatives = min_derivative + F.softplus(F.pad(unnormalized_derivatives, (1, 1), value=edge))

    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    index = (torch.searchsorted(cumheights[..., :-1].contiguous(), yc.unsqueeze(-1), right=True) - 1).clamp(0, bins - 1)

    def at(table: Tensor) -> Tensor:
        return table.gather(-1, index).squeeze(-1)

    x0, w, y0, h = at(cumwidths), at(widths), at(cumheights), at(heights)
    d0, d1 = at(derivatives), at(derivatives[..., 1:])
    delta = h / w
    dy = yc - y0
    curvature = d0 + d1 - 2 * delta
    a = dy * curvature + h * (delta - d0)
    b = h * d0 - dy * curvature
    c = -delta * dy
    root = (2 * c) / (-b - torch.sqrt(b * b - 4 * a * c))
    return torch.where(inside, root * w + x0, y)
