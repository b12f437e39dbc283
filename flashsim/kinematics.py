"""Angle arithmetic shared by features, transforms and the reference detector."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["wrap_phi", "delta_phi"]


def wrap_phi(angle: Any) -> Any:
    """Angles wrapped to [-pi, pi) (numpy or awkward arrays)."""
    wrapped = np.mod(angle + np.pi, 2 * np.pi) - np.pi
    return np.where(wrapped >= np.pi, wrapped - 2 * np.pi, wrapped)


def delta_phi(a: Any, b: Any) -> Any:
    """a - b wrapped to [-pi, pi)."""
    return wrap_phi(a - b)
