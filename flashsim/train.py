"""Per-unit training from a recipe (``flashsim/recipes/<unit>.toml``): dataset, split by event, AdamW with
warm-up + cosine schedule, early stopping, best checkpoint, resume, loss curve and a record.

An ensemble (``ensemble = K``) puts member 0 in the unit directory and the others in ``member_<k>/``.
Recipes are read by :mod:`flashsim.recipe`; optimizers and schedules come from :mod:`flashsim.optim`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from flashsim.chain import resolve_device
from flashsim.datasets import (
    Dataset,
    extract,
    load_dataset,
    spec_digest,
    split_by_event,
)
from flashsim.errors import InputError
from flashsim.files import atomic_output
from flashsim.interrupts import stop_if_signalled
from flashsim.io import resolve_inputs
from flashsim.locations import resolve_unit_dir
from flashsim.models import ConditionalModel, EfficiencyModel, build_model, check_model_config
from flashsim.optim import OPTIMIZERS, SCHEDULES, Step
from flashsim.recipe import FitConfig, Recipe
from flashsim.transforms import ContextPipeline, TargetPipeline
from flashsim.unit import Unit, UnitSpec, _seed

__all__ = ["train_unit", "fit_model"]

# ---- the generic fit loop ---------------------------------------------------------------------


class _LossModule(nn.Module):
    """Makes ``model.loss`` the forward pass, so DistributedDataParallel syncs its gradients."""

    def __init__(self, model: ConditionalModel | EfficiencyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, targets: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.model.loss(targets, context)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun; initialises the process group once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def fit_model(
    model: ConditionalModel | EfficiencyModel,
    make_train: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    val: tuple[torch.Tensor, torch.Tensor],
    cfg: FitConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Callable[[dict[str, Any]], None] | None = None,
    select: Callable[[], dict[str, Any]] | None = None,
    every: int = 1,
) -> dict[str, Any]:
    """Train ``model`` by its ``loss``; ``make_train(epoch)`` gives (targets, context) for that epoch.

    Keeps the best validation state, stops early after ``patience`` epochs without improvement,
    checkpoints every epoch (``torch.save`` of plain tensors, reloaded with ``weights_only=True``).
    With ``select`` (a metric of the model in eval mode, a dict with ``score``, lower is better), the state kept is
    the best-scored one of the evaluations every ``every`` epochs and at the last epoch run; the NLL still stops early.
    """
    rank, world = _distributed()
    model.to(device)
    wrapped: nn.Module = _LossModule(model)
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = OPTIMIZERS.get(cfg.optimizer, "optimizer").build(model.parameters(), cfg.lr, cfg.weight_decay)
    schedule = SCHEDULES.get(cfg.schedule, "schedule")
    history: dict[str, list[float]] = {"train": [], "val": [], "lr": [], "samples_per_s": [], "data_wait_s": []}
    state: dict[str, Any] = {"epoch": 0, "best": math.inf, "bad_epochs": 0, "best_state": copy.deepcopy(model.state_dict())}
    evaluations: list[dict[str, Any]] = []  # the selection metric, epoch by epoch
    if resume and checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = {"epoch": int(saved["epoch"]), "best": float(saved["best"]), "bad_epochs": int(saved["bad_epochs"]),
                 "best_state": saved["best_state"]}
        history = {k: list(v) for k, v in json.loads(saved["history"]).items()}
        evaluations = json.loads(saved.get("evaluations", "[]"))
    val_y, val_x = (t.to(device) for t in val)
    steps_per_epoch = None
    amp = cfg.amp and device.type == "cuda"
    for epoch in range(state["epoch"], cfg.epochs):
        stop_if_signalled()
        if state["bad_epochs"] >= cfg.patience:
            break
        torch.manual_seed(_seed(cfg.seed, "epoch", epoch))
        train_y, train_x = make_train(epoch)
        if device.type == "cuda":
            train_y, train_x = train_y.pin_memory().to(device, non_blocking=True), train_x.pin_memory().to(device, non_blocking=True)
        n = train_y.shape[0]
        generator = torch.Generator().manual_seed(_seed(cfg.seed, "shuffle", epoch))
        order = torch.randperm(n, generator=generator)[rank::world].to(train_y.device)
        steps_per_epoch = math.ceil(len(order) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
        model.train()
        losses, wait, start = [], 0.0, time.perf_counter()
        for step in range(steps_per_epoch):
            t0 = time.perf_counter()
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            yb, xb = train_y[idx], train_x[idx]
            wait += time.perf_counter() - t0
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * schedule.factor(Step(epoch * steps_per_epoch + step, total, steps_per_epoch, warmup,
                                                            cfg.min_lr_factor))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = wrapped(yb, xb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch} step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append(loss.detach())
        elapsed = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            val_loss = float(np.mean([float(model.loss(val_y[s : s + 65536], val_x[s : s + 65536]))
                                      for s in range(0, max(1, val_y.shape[0]), 65536)]))
        train_loss = float(torch.stack(losses).mean()) if losses else math.nan
        history["train"].append(train_loss)
        history["val"].append(val_loss)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        history["samples_per_s"].append(len(order) / elapsed if elapsed > 0 else math.nan)
        history["data_wait_s"].append(wait / elapsed if elapsed > 0 else 0.0)
        _keep_best(state, evaluations, model, val_loss, epoch, cfg, select, every)
        if checkpoint is not None and rank == 0:
            with atomic_output(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state["epoch"],
                            "best": state["best"], "bad_epochs": state["bad_epochs"], "best_state": state["best_state"],
                            "history": json.dumps(history), "evaluations": json.dumps(evaluations)}, tmp)
        if progress is not None:
            progress({"epoch": epoch + 1, "epochs": cfg.epochs, "train": train_loss, "val": val_loss,
                      "samples_per_s": history["samples_per_s"][-1]})
    model.load_state_dict(state["best_state"])
    result = {"history": history, "best_val": state["best"], "epochs_run": state["epoch"]}
    if select is not None:
        best = min(evaluations, key=lambda e: e["score"]) if evaluations else None
        result["selection"] = {"best_epoch": best["epoch"] if best else None, "evaluations": evaluations}
    return result


def _keep_best(state: dict[str, Any], evaluations: list[dict[str, Any]], model: nn.Module, val_loss: float, epoch: int,
               cfg: FitConfig, select: Callable[[], dict[str, Any]] | None, every: int) -> None:
    """After an epoch: count epochs without NLL improvement and keep the best state (by NLL, or by ``select``)."""
    improved = val_loss < state["best"]
    if improved:
        state.update(best=val_loss, bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = epoch + 1
    if select is None:
        if improved:
            state["best_state"] = copy.deepcopy(model.state_dict())
    elif state["epoch"] % every == 0 or state["epoch"] == cfg.epochs or state["bad_epochs"] >= cfg.patience:
        evaluations.append({"epoch": state["epoch"], "val": val_loss} | select())
        if len(evaluations) == 1 or evaluations[-1]["score"] < min(e["score"] for e in evaluations[:-1]):
            state["best_state"] = copy.deepcopy(model.state_dict())


# ---- a whole unit -----------------------------------------------------------------------------


def _dataset_for(recipe: Recipe, unit: Unit, log: Callable[[str], None]) -> Dataset:
    """The unit's training table: the cached Parquet when it was built from the same files, else extracted anew."""
    data = recipe.data
    cache = Path(data.dataset) if data.dataset else None
    if not data.inputs:
        if cache is not None and cache.is_file():
            return load_dataset(cache)
        raise InputError(f"recipe {recipe.path}: [data] needs 'inputs' (NanoAOD files/globs) or an existing 'dataset'")
    if cache is not None and cache.is_file():
        cached = load_dataset(cache)
        wanted = [(str(p), p.stat().st_size) for p in resolve_inputs(data.inputs)]
        if [(s["path"], s["bytes"]) for s in cached.report.sources] == wanted and cached.report.spec_digest == spec_digest(unit):
            log(f"dataset: cached {cache} ({cached.report.summary()})")
            return cached
    dataset = extract(unit, data.inputs, step_size=data.step_size, max_events=data.max_events)
    log(f"dataset: {dataset.report.summary()}")
    if cache is not None:
        dataset.save(cache)
    return dataset


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("flashsim", "torch", "nflows", "numpy", "awkward", "uproot"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _plot_losses(histories: Mapping[str, Mapping[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 4), squeeze=False)
    for ax, (name, hist) in zip(axes[0], histories.items()):
        ax.plot(range(1, len(hist["train"]) + 1), hist["train"], label="train")
        ax.plot(range(1, len(hist["val"]) + 1), hist["val"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_unit(recipe: Recipe, resume: bool = False, log: Callable[[str], None] = print,
               progress: Callable[[dict[str, Any]], None] | None = None) -> Unit:
    """Train every model of a unit as the recipe says and write the complete unit directory.

    With ``ensemble = K`` the unit directory holds member 0 and ``member_<k>/`` (k = 1..K-1) the
    copies trained with seed ``training.seed + k`` on the same split; member 0 is returned.
    """
    if recipe.ensemble > 1:
        return _train_ensemble(recipe, resume, log, progress)
    started = time.time()
    source_dir = resolve_unit_dir(recipe.unit)
    out_dir = Path(recipe.output) if recipe.output else source_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() != source_dir.resolve():
        shutil.copyfile(source_dir / "unit.toml", out_dir / "unit.toml")
    # the spec alone: preprocessing and weights already in out_dir (an earlier spec's) are refitted
    spec_unit = Unit(UnitSpec.load(out_dir / "unit.toml"))
    spec = spec_unit.spec
    model_config = {**spec.model, **recipe.model}
    check_model_config(model_config, f"recipe {recipe.path}: [model] over unit {spec.name!r}'s model")
    device = _training_device(recipe)
    dataset, train_mask, val_mask = _split(recipe, _dataset_for(recipe, spec_unit, log))
    labelled = dataset.columns["reconstructed"].astype(bool)
    ctx, refs, tgts = dataset.group("ctx"), dataset.group("ref"), dataset.group("tgt")
    missing = [c for c in spec.context_columns if c not in ctx]
    if missing:
        raise InputError(f"unit {spec.name!r}: dataset lacks context columns {missing}; rebuild it (flashsim dataset {spec.name})")
    for name, mask in (("training", train_mask & labelled), ("validation", val_mask & labelled)):
        if not mask.any():
            raise InputError(f"unit {spec.name!r}: the {name} split has zero matched objects ({dataset.report.summary()})")

    target_pipeline = TargetPipeline(spec.targets)
    pick = lambda cols, mask: {k: v[mask] for k, v in cols.items()}  # noqa: E731
    # fitted on the rows the loss is computed on (training and validation): a class a categorical step learns from the
    # data must include the validation rows' (a lostHits of 2 only among 70 validation electrons stopped a training)
    fitting = train_mask | val_mask
    try:
        context_pipeline = ContextPipeline(spec.context_steps()).fit({k: ctx[k][fitting] for k in spec.context_columns})
        context = torch.as_tensor(context_pipeline.forward({k: ctx[k] for k in spec.context_columns}))
        target_pipeline.fit(pick(tgts, fitting & labelled), pick(refs, fitting & labelled),
                            np.random.default_rng(recipe.fit_config().seed))
    except ValueError as exc:  # a value outside a transform's domain: name the unit and stop before training
        raise InputError(f"unit {spec.name!r}: preprocessing cannot be fitted on the training and validation data: {exc}") from exc

    def targets_for(mask: np.ndarray, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng(_seed(recipe.fit_config().seed, "noise", epoch))
        return torch.as_tensor(target_pipeline.forward(pick(tgts, mask), pick(refs, mask), rng))

    cfg = recipe.fit_config()
    torch.manual_seed(_seed(cfg.seed, "init", spec.name))
    model = cast(ConditionalModel, build_model({**model_config, "name": spec.name}, target_pipeline.n_features, context.shape[1]))
    log(f"unit {spec.name}: {int((train_mask & labelled).sum())} training / {int((val_mask & labelled).sum())} validation objects, "
        f"{target_pipeline.n_features} targets, {context.shape[1]} context columns, {sum(p.numel() for p in model.parameters())} parameters, device {device}")
    # the classifier first: a physics metric runs the whole unit, efficiency or multiplicity included
    classifiers: dict[str, Any] = {}
    classifier_records: dict[str, Any] = {}
    kind = spec.kind.classifier
    if kind is not None and spec.kind.classifier_config(spec) is not None:
        label = torch.as_tensor(labelled.astype(np.float32))
        classifiers[kind], classifier_records[kind] = _fit_classifier(
            spec, recipe, context, label, (torch.as_tensor(train_mask), torch.as_tensor(val_mask)), device,
            out_dir / f"checkpoint_{kind}.pt", resume, _labelled(progress, spec.name, kind))
        _warn_high_rate_stop(spec.name, kind, classifier_records[kind], recipe.fit_config("efficiency").epochs, log)

    unit = Unit(spec, context_pipeline, target_pipeline, model, classifiers.get("efficiency"), classifiers.get("multiplicity"))
    tr, va = train_mask & labelled, val_mask & labelled
    result = fit_model(
        model, lambda epoch: (targets_for(tr, epoch), context[torch.as_tensor(tr)]),
        (targets_for(va, -1), context[torch.as_tensor(va)]), cfg, device, out_dir / "checkpoint_model.pt", resume,
        _labelled(progress, spec.name, "model"),
        *_physics_selection(recipe, unit, device, log),
    )
    record: dict[str, Any] = {"model": {k: v for k, v in result.items() if k != "history"} | {"history": result["history"]}}
    record |= classifier_records
    histories = {"model": result["history"]} | {k: v["history"] for k, v in classifier_records.items()}
    for fitted in (model, *classifiers.values()):
        fitted.to("cpu")
    record |= {
        "unit": spec.name, "recipe": str(recipe.path), "recipe_content": recipe.model_dump(mode="json"),
        "dataset": dataset.report.__dict__, "rows": {"train": int(train_mask.sum()), "validation": int(val_mask.sum())},
        "versions": _versions(), "device": str(device), "world_size": _distributed()[1], "wall_time_s": round(time.time() - started, 1),
    }
    if _distributed()[0] != 0:  # data-parallel training: only rank 0 writes the unit
        return unit
    unit.save(out_dir, record)
    _plot_losses(histories, out_dir / "loss.png")
    for name in ("model", "efficiency", "multiplicity"):
        (out_dir / f"checkpoint_{name}.pt").unlink(missing_ok=True)
    log(f"unit {spec.name}: best validation loss {result['best_val']:.4f} after {result['epochs_run']} epochs; wrote {out_dir}")
    return unit


def _train_ensemble(recipe: Recipe, resume: bool, log: Callable[[str], None],
                    progress: Callable[[dict[str, Any]], None] | None) -> Unit:
    """Member 0 in the unit directory, members k = 1..K-1 in ``member_<k>/`` with seed ``training.seed + k``."""
    base = Path(recipe.output) if recipe.output else resolve_unit_dir(recipe.unit)
    seed = recipe.training.seed
    first = train_unit(recipe.model_copy(update={"ensemble": 1}), resume, log, progress)
    for k in range(1, recipe.ensemble):
        log(f"ensemble member {k}/{recipe.ensemble - 1}: seed {seed + k}")
        member = recipe.model_copy(update={"ensemble": 1, "output": str(base / f"member_{k}"), "unit": str(base),
                                           "training": recipe.training.model_copy(update={"seed": seed + k})})
        train_unit(member, resume, log, progress)
    return first


def _physics_selection(recipe: Recipe, unit: Unit, device: torch.device,
                       log: Callable[[str], None]) -> tuple[Callable[[], dict[str, Any]] | None, int]:
    """``fit_model``'s ``select`` and ``every`` for ``[selection] metric = "physics"`` (None: keep the best NLL)."""
    sel = recipe.selection
    if sel.metric == "nll":
        return None, 1
    from flashsim.validate.physics import physics_metric, read_validation_events

    assert sel.input is not None
    for classifier in (unit.efficiency, unit.multiplicity):
        if classifier is not None:
            classifier.to(device)
    events = read_validation_events(sel.input, sel.events)
    log(f"unit {unit.name}: checkpoint selection by the physics metric on {len(events)} events of {sel.input}, every {sel.every} epochs")

    def select() -> dict[str, Any]:
        with torch.no_grad():
            metric = physics_metric(unit, events, seed=sel.seed, device=device)
        log(f"unit {unit.name}: physics metric {metric.score:.3f} (median R {metric.median_ratio:.3f}, worst R "
            f"{metric.worst_ratio:.3g} on {metric.worst_target}, AUC {metric.auc:.3f} beside {metric.auc_floor:.3f})")
        return metric.to_dict()

    return select, sel.every


def _training_device(recipe: Recipe) -> torch.device:
    """The recipe's device (one GPU per process under torchrun) and thread count."""
    device = resolve_device(recipe.training.device)
    if device.type == "cuda" and _distributed()[1] > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if recipe.training.num_threads:
        torch.set_num_threads(recipe.training.num_threads)
    return device


def _split(recipe: Recipe, dataset: Dataset) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """The rows used (``max_rows`` of whole events) and their training and validation masks (whole events)."""
    max_rows = recipe.training.max_rows
    if max_rows and len(dataset) > max_rows:
        fraction = max_rows / len(dataset)
        dataset = dataset.subset(split_by_event(dataset.columns["event_id"], [fraction, 1 - fraction], recipe.split.seed + 1)[0])
    validation, test = recipe.split.validation, recipe.split.test
    if test > 0:  # a held-out test fraction; validation is then a fraction of the rest (learning sample)
        fractions = [(1 - test) * (1 - validation), (1 - test) * validation, test]
    else:
        fractions = [1 - validation, validation]
    train_mask, val_mask = split_by_event(dataset.columns["event_id"], fractions, recipe.split.seed)[:2]
    return dataset, train_mask, val_mask


def _labelled(progress: Callable[[dict[str, Any]], None] | None, unit: str,
              fit: str) -> Callable[[dict[str, Any]], None] | None:
    """``progress`` told which unit and which of its networks (model, efficiency, multiplicity) an epoch is of."""
    return None if progress is None else lambda info: progress(info | {"unit": unit, "fit": fit})


def _warn_high_rate_stop(unit: str, kind: str, record: Mapping[str, Any], epochs: int, log: Callable[[str], None]) -> None:
    """Say so when a classifier stopped early with its learning rate above half the start: its best state is then a
    noisy high-rate epoch (the from-jet units' efficiencies missed interactions so)."""
    rates = record["history"]["lr"]
    if record["epochs_run"] < epochs and rates and rates[-1] > 0.5 * rates[0]:
        log(f"unit {unit}: warning: the {kind} classifier stopped early, at epoch {record['epochs_run']} of {epochs} with the "
            f"learning rate still {rates[-1]:.2g} (from {rates[0]:.2g}); set [efficiency] patience >= epochs to run its whole schedule")


def _fit_classifier(spec: UnitSpec, recipe: Recipe, context: torch.Tensor, label: torch.Tensor,
                    masks: tuple[torch.Tensor, torch.Tensor], device: torch.device, checkpoint: Path, resume: bool,
                    progress: Callable[[dict[str, Any]], None] | None) -> tuple[Any, dict[str, Any]]:
    """The unit kind's classifier (efficiency, or one-more-object), fitted, Platt-calibrated, and its record."""
    name = spec.kind.classifier
    assert name is not None
    config = {"type": "efficiency", **(spec.kind.classifier_config(spec) or {}),
              **recipe.efficiency.model_dump(include={"hidden", "layers"}, exclude_none=True), "name": spec.name}
    torch.manual_seed(_seed(recipe.fit_config().seed, "init", name))
    classifier = cast(EfficiencyModel, build_model(config, 1, context.shape[1]))
    tm, vm = masks
    res = fit_model(classifier, lambda _epoch: (label[tm], context[tm]), (label[vm], context[vm]),
                    recipe.fit_config("efficiency"), device, checkpoint, resume, progress)
    classifier.to("cpu")
    rows = vm if recipe.efficiency.calibration == "validation" else tm | vm
    a, b = classifier.calibrate(context[rows], label[rows])
    return classifier, {"best_val": res["best_val"], "epochs_run": res["epochs_run"], "platt": [a, b], "history": res["history"]}
