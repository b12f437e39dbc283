"""Optimizers and learning-rate schedules a recipe names (``[optimizer] type``, ``[schedule] type``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import torch

from flashsim.registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "Schedule", "Step"]


class Optimizer:
    """A torch optimizer built from the recipe's ``lr`` and ``weight_decay``."""

    type: ClassVar[str] = ""

    @staticmethod
    def build(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
        raise NotImplementedError


@dataclass(frozen=True)
class Step:
    """Where training stands: the global step, the steps in all and per epoch, the warm-up steps and
    the floor of the learning-rate factor."""

    step: int
    total: int
    steps_per_epoch: int
    warmup: int
    floor: float


class Schedule:
    """The learning-rate multiplier at a training step."""

    type: ClassVar[str] = ""

    @staticmethod
    def factor(at: Step) -> float:
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
    def factor(at):
        if at.step < at.warmup:
            return (at.step + 1) / at.warmup
        progress = (at.step - at.warmup) / max(1, at.total - at.warmup)
        return at.floor + (1 - at.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@SCHEDULES.register
class InverseEpoch(Schedule):
    """lr / (1 + epoch), the epoch-wise decay of Chen et al. (2021)."""

    type = "inverse_epoch"

    @staticmethod
    def factor(at):
        return 1.0 / (1 + at.step // max(1, at.steps_per_epoch))


@SCHEDULES.register
class Constant(Schedule):
    """A constant learning rate."""

    type = "constant"

    @staticmethod
    def factor(at):  # noqa: ARG004  (constant: whatever the step)
        return 1.0
