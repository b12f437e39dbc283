"""Hyper-parameter search by physics (``flashsim tune``): optuna trials over the recipe's ``[tune.space]``, each
training the unit with its values as ``section.key=value`` overrides and scored by the physics metric on the
``[selection] input`` file (:mod:`flashsim.validate.physics`; lower is better), the validation NLL as a guard.

The study lives in a directory: optuna's journal (``journal.log``: rerunning the command continues the study),
``study.json`` (every trial's parameters, metric, NLL and time; the best trial), rewritten atomically after each
trial, and ``trials/trial_<n>/`` holding the best trial's unit so far, copied to the output directory at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flashsim.errors import ConfigError
from flashsim.files import atomic_write_text, temporary_sibling
from flashsim.locations import resolve_unit_dir
from flashsim.models import check_model_config
from flashsim.recipe import Range, Recipe, load_recipe
from flashsim.spec import UnitSpec
from flashsim.train import train_unit
from flashsim.validate.report import jsonable

__all__ = ["tune_unit", "search_space"]

OBJECTIVE = "median noise-floor ratio R over the unit's targets + 2 x max(0, classifier AUC - AUC between reference halves)"


def search_space(recipe: Recipe) -> dict[str, Range | list[Any]]:
    """The recipe's ``[tune.space]`` as ``section.key`` -> range or choices; a :class:`ConfigError` if it is empty."""
    space = {f"{section}.{key}": dist for section, table in recipe.tune.space.items() for key, dist in table.items()}
    if not space:
        raise ConfigError(f"recipe {recipe.path}: [tune.space] is empty; declare e.g. [tune.space.optimizer] lr = {{low = 1e-4, high = 1e-2, log = true}}")
    for name, dist in space.items():
        if isinstance(dist, list) and not all(isinstance(v, (bool, int, float, str)) for v in dist):
            raise ConfigError(f"recipe {recipe.path}: [tune.space] {name} = {dist}: choices must be numbers, strings or booleans")
    return space


def _overrides(values: dict[str, Any]) -> list[str]:
    return [f"{name}={json.dumps(value)}" for name, value in values.items()]


def _check_space(source: str | os.PathLike[str], overrides: Sequence[str], space: dict[str, Range | list[Any]]) -> None:
    """Both ends of every range (every choice) must give a valid recipe and model: errors before any trial runs."""
    for name, dist in space.items():
        for value in dist if isinstance(dist, list) else (dist.low, dist.high):
            recipe = load_recipe(source, [*overrides, *_overrides({name: value})])
            spec = UnitSpec.load(resolve_unit_dir(recipe.unit) / "unit.toml")
            check_model_config({**spec.model, **recipe.model}, f"recipe {recipe.path}: [tune.space] {name} = {value!r}")


def _suggest(trial: Any, name: str, dist: Range | list[Any]) -> Any:
    if isinstance(dist, list):
        return trial.suggest_categorical(name, dist)
    if isinstance(dist.low, int) and isinstance(dist.high, int):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, float(dist.low), float(dist.high), log=dist.log)


def _trial_record(trial: Any) -> dict[str, Any]:
    return {"number": trial.number, "state": trial.state.name, "params": trial.params, "score": trial.value,
            **{k: trial.user_attrs.get(k) for k in ("metric", "nll", "time_s", "failure")}}


def _replace_dir(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole: into a hidden sibling first, then swapped in."""
    tmp = temporary_sibling(target)
    shutil.copytree(source, tmp)
    if target.exists():
        old = temporary_sibling(target)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old)
    else:
        tmp.rename(target)


def tune_unit(source: str | os.PathLike[str], trials: int, study_dir: Path, output: Path, overrides: Sequence[str] = (),
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``trials`` more trials of the study in ``study_dir``, save the best trial's unit to ``output``; returns the record."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from flashsim.validate.physics import physics_metric, read_validation_events

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial is logged below
    recipe = load_recipe(source, overrides)
    space = search_space(recipe)
    _check_space(source, overrides, space)
    sel = recipe.selection
    if not sel.input:
        raise ConfigError(f"recipe {recipe.path}: flashsim tune needs [selection] input, a validation GEN+RECO file")
    events = read_validation_events(sel.input, sel.events)
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    name = UnitSpec.load(resolve_unit_dir(recipe.unit) / "unit.toml").name
    done = len(optuna.create_study(study_name=name, storage=storage, load_if_exists=True).trials)
    # a sampler seeded anew per invocation would propose the first invocation's trials again
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=recipe.tune.seed + done))
    log(f"study {study_dir}: {done} trials so far, {trials} more; objective: {OBJECTIVE}")

    def objective(trial: optuna.Trial) -> float:
        params = {k: _suggest(trial, k, dist) for k, dist in space.items()}
        unit_dir = study_dir / "trials" / f"trial_{trial.number}"
        trial_recipe = load_recipe(source, [*overrides, *_overrides(params), *_overrides({"output": str(unit_dir)})])
        started = time.time()
        try:
            unit = train_unit(trial_recipe, log=log)
        except FloatingPointError as exc:  # the training loss diverged
            trial.set_user_attr("failure", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        nll = float(json.loads((unit_dir / "training.json").read_text())["model"]["best_val"])
        trial.set_user_attr("nll", nll)
        bound = recipe.tune.max_nll
        if not math.isfinite(nll) or (bound is not None and nll > bound):
            trial.set_user_attr("failure", f"validation NLL {nll:g} is non-finite or above max_nll = {bound}")
            raise optuna.TrialPruned(trial.user_attrs["failure"])
        metric = physics_metric(unit, events, seed=sel.seed)
        trial.set_user_attr("metric", metric.to_dict())
        trial.set_user_attr("time_s", round(time.time() - started, 1))
        log(f"trial {trial.number}: {params} -> score {metric.score:.4f} (median R {metric.median_ratio:.3f}, "
            f"AUC {metric.auc:.3f} beside {metric.auc_floor:.3f}), NLL {nll:.4f}")
        return metric.score

    def after(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        record = _record(study, recipe, space, output)
        keep = f"trial_{record['best']['number']}" if record["best"] else None
        for directory in (study_dir / "trials").glob("trial_*"):
            if directory.name != keep:
                shutil.rmtree(directory)
        atomic_write_text(study_dir / "study.json", json.dumps(jsonable(record), indent=1, allow_nan=False))

    study.optimize(objective, n_trials=trials, callbacks=[after])
    record = _record(study, recipe, space, output)
    if record["best"] is None:
        raise ConfigError(f"study {study_dir}: no trial completed ({len(study.trials)} trials: see {study_dir / 'study.json'})")
    _replace_dir(study_dir / "trials" / f"trial_{record['best']['number']}", output)
    log(f"best trial {record['best']['number']}: {record['best']['params']} score {record['best']['score']:.4f}; unit in {output}")
    return record


def _record(study: Any, recipe: Recipe, space: dict[str, Range | list[Any]], output: Path) -> dict[str, Any]:
    """The study record: the recipe, the space, the objective, every trial and the best."""
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    return {"unit": recipe.unit, "recipe": str(recipe.path), "objective": OBJECTIVE,
            "space": {k: v if isinstance(v, list) else v.model_dump() for k, v in space.items()},
            "trials": [_trial_record(t) for t in study.trials], "best": _trial_record(best) if best else None,
            "best_unit": str(output)}
