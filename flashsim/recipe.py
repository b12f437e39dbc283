"""Training recipes (``flashsim/recipes/<unit>.toml`` or a path): which unit, which data, how to split
and fit, parsed into a strict typed model. Unknown sections and keys are errors naming the file, the
key path and the closest valid key; values are range-checked; defaults are written here once.

Recipes may ask for plain Adam (``[optimizer] type = "adam"``) and the epoch-wise ``lr / (1 + epoch)``
decay of Chen et al. (``[schedule] type = "inverse_epoch"``), hold out a test fraction of the events
(``[split] test = 0.2``) and train an ensemble of K copies with seeds ``seed + k`` (``ensemble = K``).
``[selection]`` keeps the checkpoint with the best physics metric instead of the best NLL; ``[tune]`` declares the
search space of ``flashsim tune``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flashsim.errors import InputError
from flashsim.locations import resolve_recipe
from flashsim.optim import OPTIMIZERS, SCHEDULES
from flashsim.registry import Registry
from flashsim.spec import describe_errors

__all__ = ["Recipe", "FitConfig", "Selection", "Tune", "load_recipe"]


@dataclass
class FitConfig:
    """Optimisation settings of one model fit."""

    epochs: int = 50
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_factor: float = 0.01
    patience: int = 8
    seed: int = 1
    amp: bool = False
    optimizer: str = "adamw"  # a name in flashsim.optim.OPTIMIZERS
    schedule: str = "warmup_cosine"  # a name in flashsim.optim.SCHEDULES


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Data(_Section):
    """Where the training rows come from: NanoAOD inputs (files/globs) and/or a cached table."""

    inputs: list[str] = []
    dataset: str | None = None
    max_events: int | None = Field(default=None, ge=1)
    step_size: int = Field(default=100_000, ge=1)

    @field_validator("inputs", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Split(_Section):
    """Fractions of the events (whole events) held out for validation and test."""

    validation: float = Field(default=0.2, gt=0, lt=1)
    test: float = Field(default=0.0, ge=0, lt=1)
    seed: int = 1


def _registered(registry: Registry[Any]) -> AfterValidator:
    """A string field that must name an entry of ``registry`` (the closest name suggested otherwise)."""
    def check(value: str) -> str:
        registry.get(value)
        return value

    return AfterValidator(check)


class OptimizerSection(_Section):
    type: Annotated[str, _registered(OPTIMIZERS)] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)


class ScheduleSection(_Section):
    type: Annotated[str, _registered(SCHEDULES)] = "warmup_cosine"
    warmup_epochs: float = Field(default=1.0, ge=0)
    min_lr_factor: float = Field(default=0.01, ge=0, le=1)


class Training(_Section):
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=4096, ge=1)
    patience: int = Field(default=8, ge=1)
    seed: int = 1
    device: str = "auto"
    amp: bool = False
    max_rows: int | None = Field(default=None, ge=1)
    num_threads: int | None = Field(default=None, ge=1)


class ClassifierTraining(_Section):
    """The efficiency (or multiplicity) classifier: unset values follow [training] (epochs: half of it)."""

    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    patience: int | None = Field(default=None, ge=1)
    hidden: int | None = Field(default=None, ge=1)
    layers: int | None = Field(default=None, ge=1)
    # the rows Platt scaling is fitted on: the validation rows, or training and validation together (a small
    # validation split's chance rate otherwise shifts every probability)
    calibration: Literal["validation", "all"] = "validation"


class Selection(_Section):
    """Which state of the model is kept: the best validation NLL, or the best physics metric on a validation
    GEN+RECO file (:mod:`flashsim.validate.physics`) evaluated every ``every`` epochs and at the last epoch run."""

    metric: Literal["nll", "physics"] = "nll"
    every: int = Field(default=1, ge=1)
    input: str | None = None
    events: int | None = Field(default=None, ge=2)
    seed: int = 0

    @model_validator(mode="after")
    def _needs_input(self) -> Selection:
        if self.metric == "physics" and not self.input:
            raise ValueError("metric = 'physics' needs input (a validation GEN+RECO file)")
        return self


class Range(_Section):
    """A numeric range of a tuned parameter: integers when ``low`` and ``high`` are both integers."""

    low: float | int
    high: float | int
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class Tune(_Section):
    """The search space of ``flashsim tune``: ``[tune.space.<section>] key = {low, high, log} | [choices]``,
    and the NLL guard (a trial whose best validation NLL is above ``max_nll`` fails)."""

    space: dict[str, dict[str, Range | Annotated[list[Any], Field(min_length=1)]]] = {}
    max_nll: float | None = None
    seed: int = 0


class Recipe(_Section):
    """A training recipe: which unit, which data, how to split and fit (every field overridable)."""

    unit: str
    output: str | None = None
    ensemble: int = Field(default=1, ge=1)
    data: Data
    split: Split = Split()
    model: dict[str, Any] = {}  # overrides of the unit's model table, checked by its model type
    optimizer: OptimizerSection = OptimizerSection()
    schedule: ScheduleSection = ScheduleSection()
    training: Training = Training()
    efficiency: ClassifierTraining = ClassifierTraining()
    selection: Selection = Selection()
    tune: Tune = Tune()
    path: Path | None = Field(default=None, exclude=True)

    def fit_config(self, section: str = "training") -> FitConfig:
        """The settings of the main model's fit, or of the classifier's (``section = "efficiency"``)."""
        t = self.training
        cfg = FitConfig(
            epochs=t.epochs, batch_size=t.batch_size, lr=self.optimizer.lr, weight_decay=self.optimizer.weight_decay,
            warmup_epochs=self.schedule.warmup_epochs, min_lr_factor=self.schedule.min_lr_factor, patience=t.patience,
            seed=t.seed, amp=t.amp, optimizer=self.optimizer.type, schedule=self.schedule.type,
        )
        if section == "efficiency":
            e = self.efficiency
            cfg.epochs = e.epochs if e.epochs is not None else max(5, cfg.epochs // 2)
            cfg.batch_size = e.batch_size or cfg.batch_size
            cfg.lr = e.lr or cfg.lr
            cfg.patience = e.patience or cfg.patience
            cfg.amp = False
        return cfg


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_recipe(path_or_unit: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Recipe:
    """Read a recipe (a path, or a packaged recipe by unit name) and apply ``section.key=value`` overrides."""
    path = resolve_recipe(path_or_unit)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"recipe {path}: {exc}") from exc
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"override {item!r} must look like section.key=value")
        section, _, name = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        if not isinstance(target, dict):
            raise InputError(f"override {item!r}: {section!r} is not a section of recipe {path}")
        target[name] = _parse_value(value)
    try:
        return Recipe.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise InputError(f"recipe {path}: {describe_errors(exc, Recipe)}") from None
