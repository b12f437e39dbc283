"""Optimizers and learning-rate schedules a recipe names (``[optimizer] type``, ``[schedule] type``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch

from flashsim.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "Schedule"]


class Optimizer:
    """A torch optimizer built from the recipe's ``lr`` and ``weight_decay``."""

    type: ClassVar[str] = ""

    @staticmethod
    def build(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
        raise NotImplementedError


class Schedule:
    """The learning-rate multiplier at a global step."""

    type: ClassVar[str] = ""

    @staticmethod
    def factor(step: int, total: int, warmup: int, floor: float, steps_per_epoch: int) -> float:
        raise NotImplementedError


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@OPTIMIZERS.register
class AdamW(Optimizer):
    """Adam with decoupled weight decay (the default)."""

    type = "adamw"

    @staticmethod
    def build(parameters, lr, weight_decay):
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register
class Adam(Optimizer):
    """Plain Adam (Chen et al. 2021)."""

    type = "adam"

    @staticmethod
    def build(parameters, lr, weight_decay):
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


@SCHEDULES.register
class WarmupCosine(Schedule):
    """Linear warm-up, then a cosine decay to ``floor`` (the default)."""

    type = "warmup_cosine"

    @staticmethod
    def factor(step, total, warmup, floor, steps_per_epoch):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@SCHEDULES.register
class InverseEpoch(Schedule):
    """lr / (1 + epoch), the epoch-wise decay of Chen et al. (2021)."""

    type = "inverse_epoch"

    @staticmethod
    def factor(step, total, warmup, floor, steps_per_epoch):
        return 1.0 / (1 + step // max(1, steps_per_epoch))


@SCHEDULES.register
class Constant(Schedule):
    """A constant learning rate."""

    type = "constant"

    @staticmethod
    def factor(step, total, warmup, floor, steps_per_epoch):
        return 1.0
