"""Functional units: a declarative spec (``flashsim/zoo/<name>/unit.toml``) plus fitted transforms and
weights, and the runtime that turns GEN events (and earlier units' reco output) into new columns.

Unit types: ``object`` (one reco object per selected source object, with an optional
efficiency model), ``multiplicity`` (a variable-length list per event, generated
autoregressively up to ``max_objects``) and ``event`` (one fixed vector per event).

Event units may be analysis-specific (Chen et al. 2021): ``selection`` is a cut on per-event
columns (context columns and ``event_columns``, computed but not fed to the model); events that
fail it get no output and are *dropped* from the chain's output, since an analysis-specific
sample is defined by its selection. ``target_features`` derives the reco targets with the same
feature code (e.g. the reco muon matched to the leading gen muon); ``training_selection`` is an
extra cut applied only when building the training table (targets are named ``reco_<column>``
there); ``outputs`` maps the sampled vector to several NanoAOD collections
(:mod:`flashsim.event_outputs`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import awkward as ak
import numpy as np
import torch

from flashsim import features
from flashsim.crossrefs import derived_fields, nearest
from flashsim.errors import ChainError, UnitError
from flashsim.events import pointing, references_to
from flashsim.expressions import parse
from flashsim.files import atomic_write_text, file_digest
from flashsim.kinds import POSITION, PREVIOUS, flat
from flashsim.locations import resolve_unit_dir
from flashsim.models import ConditionalModel, EfficiencyModel, SamplingError, load_model, precision_dtype, save_model
from flashsim.spec import FORMAT_VERSION, UnitSpec
from flashsim.streams import RowNoise, event_keys
from flashsim.transforms import ContextPipeline, TargetPipeline

__all__ = ["FORMAT_VERSION", "UnitSpec", "Unit", "load_unit", "POSITION", "PREVIOUS", "attach"]

RECO_PREFIX = "reco_"  # targets in a training_selection expression


def _seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed derived from a global seed and names (stable across runs and machines)."""
    words = [seed & 0xFFFFFFFF, seed >> 32] + [zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _flat(values: ak.Array) -> np.ndarray:
    return flat(values).astype(np.float64)


class Unit:
    """A unit ready to run: spec + fitted preprocessing + models (untrained units cannot run)."""

    def __init__(self, spec: UnitSpec, context: TargetPipeline | None = None, targets: TargetPipeline | None = None,
                 model: ConditionalModel | None = None, efficiency: EfficiencyModel | None = None,
                 multiplicity: EfficiencyModel | None = None) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.context_pipeline = context or ContextPipeline(spec.context_steps())
        self.target_pipeline = targets or TargetPipeline(spec.targets)
        self.model = model
        self.efficiency = efficiency
        self.multiplicity = multiplicity

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trained(self) -> bool:
        return self.model is not None

    def __repr__(self) -> str:
        return f"Unit({self.name!r}, type={self.spec.type}, output={self.spec.output!r}, trained={self.trained})"

    # ---- rows and columns ---------------------------------------------------------------------

    def rows(self, events: ak.Array) -> ak.Array | None:
        """Selected source objects (jagged, with ``_index`` into the source collection), or None for per-event units."""
        return self.kind.rows(self, events)

    def context_columns(self, events: ak.Array, rows: ak.Array | None) -> dict[str, ak.Array]:
        """Raw conditioning columns, jagged like ``rows`` (or one per event)."""
        out: dict[str, ak.Array] = {}
        for entry in self.spec.context:
            out.update(features.compute(entry, events, rows, f"unit {self.name!r}"))
        return out

    def reference_columns(self, events: ak.Array, rows: ak.Array | None,
                          context: Mapping[str, ak.Array] | None = None) -> dict[str, ak.Array]:
        """Gen values the target transforms are relative to (fields of the source object, context columns or event columns)."""
        refs = {}
        for ref in self.target_pipeline.references:
            if rows is not None and ref in rows.fields:
                refs[ref] = rows[ref]
            elif ref in self.spec.context_columns:
                refs[ref] = (context if context is not None else self.context_columns(events, rows))[ref]
            else:
                refs[ref] = features.compute({"event": ref}, events, rows, f"unit {self.name!r} reference")[ref]
        return refs

    # ---- analysis-specific event units -----------------------------------------------------------

    def event_columns(self, events: ak.Array) -> dict[str, ak.Array]:
        """Per-event columns declared in ``event_columns`` (for the selection and the outputs)."""
        out: dict[str, ak.Array] = {}
        for entry in self.spec.event_columns:
            out.update(features.compute(entry, events, None, f"unit {self.name!r} event_columns"))
        return out

    def event_mask(self, events: ak.Array) -> np.ndarray | None:
        """Events passing the unit's ``selection`` (None when it has none)."""
        if not self.spec.selection:
            return None
        cut = parse(self.spec.selection)
        columns = {k: v for k, v in self.event_columns(events).items() if k in cut.names}
        if cut.names - set(columns):
            columns |= {k: v for k, v in self.context_columns(events, None).items() if k in cut.names}
        return cut.mask(columns, len(events), f"unit {self.name!r} selection")

    def target_values(self, events: ak.Array) -> dict[str, ak.Array]:
        """Reco targets of an event unit: ``target_features`` if declared, else fields of the output collection."""
        if self.spec.target_features:
            out: dict[str, ak.Array] = {}
            for entry in self.spec.target_features:
                out.update(features.compute(entry, events, None, f"unit {self.name!r} target_features"))
            return {c: out[c] for c in self.spec.target_columns}
        reco = events[self.spec.output]
        return {c: reco[c] for c in self.spec.target_columns}

    def training_mask(self, events: ak.Array, context: Mapping[str, Any], targets: Mapping[str, Any]) -> np.ndarray | None:
        """Rows kept by ``training_selection`` (context/event columns by name, targets as ``reco_<name>``)."""
        if not self.spec.training_selection:
            return None
        cut = parse(self.spec.training_selection)
        columns = {k: v for k, v in context.items() if k in cut.names}
        columns |= {RECO_PREFIX + k: v for k, v in targets.items() if RECO_PREFIX + k in cut.names}
        if cut.names - set(columns):
            columns |= {k: v for k, v in self.event_columns(events).items() if k in cut.names}
        return cut.mask(columns, len(events), f"unit {self.name!r} training_selection")

    # ---- generation ---------------------------------------------------------------------------

    def trained_model(self) -> ConditionalModel:
        """The unit's model; a :class:`UnitError` if the unit has no trained weights."""
        if self.model is None:
            where = self.spec.path.parent if self.spec.path else self.name
            raise UnitError(f"unit {self.name!r} ({where}) has no trained weights; run `flashsim train {self.name}`")
        return self.model

    def draw(self, context: np.ndarray, noise: RowNoise, device: torch.device, batch_size: int) -> np.ndarray:
        """Model-space samples for every context row (random numbers keyed by row), in batches on ``device``."""
        model = self.trained_model()
        out = []
        for start in range(0, len(context), batch_size):
            ctx = torch.as_tensor(context[start : start + batch_size], device=device)
            out.append(model.sample(ctx, noise.subset(slice(start, start + batch_size))).detach().cpu().numpy())
        if not out:
            return np.zeros((0, self.target_pipeline.n_features), np.float32)
        return np.concatenate(out)

    def decide(self, model: EfficiencyModel, context: np.ndarray, noise: RowNoise, device: torch.device,
               batch_size: int) -> np.ndarray:
        """A classifier's yes/no draw for every context row (reconstructed? one more object?)."""
        out = [model.sample(torch.as_tensor(context[s : s + batch_size], device=device), noise.subset(slice(s, s + batch_size))).cpu().numpy()
               for s in range(0, len(context), batch_size)]
        return np.concatenate(out).astype(bool) if out else np.zeros(0, bool)

    def check_drawn(self, columns: Mapping[str, Any]) -> None:
        """Every drawn target finite and within the range the unit declares; a value outside is the unit's fault, never written."""
        for column in self.spec.target_columns:
            if column not in columns:
                continue
            values = _flat(columns[column])
            low, high = self.spec.ranges.targets.get(column, (-np.inf, np.inf))
            wrong = ~np.isfinite(values) | (values < low) | (values > high)
            if wrong.any():
                where = self.spec.path.parent if self.spec.path else "no directory"
                raise SamplingError(f"unit {self.name!r} ({where}) drew {self.spec.output}_{column} = {values[wrong][0]:g} in "
                                f"{int(wrong.sum())} of {len(values)} rows, outside its declared range [{low:g}, {high:g}]; "
                                "the unit is faulty (its weights or preprocessing): retrain or replace it")

    def context_array(self, columns: Mapping[str, ak.Array]) -> np.ndarray:
        """Raw context columns through the fitted context preprocessing."""
        return self.context_pipeline.forward({k: _flat(v) for k, v in columns.items()})

    def run(self, events: ak.Array, seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 100_000) -> ak.Array:
        """Return ``events`` (fewer if the unit selects events) with this unit's output collections attached (or merged).

        Every random number is keyed by (``seed``, unit, run, luminosityBlock, event, object): the output of an
        event does not depend on which other events are run with it, nor on ``batch_size`` or ``device``.
        """
        events, outputs = self.collections(events, seed, device, batch_size)
        for name, collection in outputs.items():
            events = attach(events, name, collection, merge=self.spec.merge, sort_by=self.spec.sort_by)
        return events

    def collections(self, events: ak.Array, seed: int = 0, device: str | torch.device = "cpu",
                    batch_size: int = 100_000) -> tuple[ak.Array, dict[str, ak.Array]]:
        """``events`` (fewer if the unit selects events) and the collections the unit draws for them, not yet attached
        (:meth:`run` attaches them): a merging unit's own objects alone."""
        self.trained_model()
        noise = RowNoise(event_keys(events, seed, self.name))
        events, outputs = self.kind.draw(self, events, noise, torch.device(device), batch_size)
        if self.spec.link is not None and self.spec.output in outputs:
            outputs = outputs | {self.spec.output: self.linked(events, outputs[self.spec.output])}
        return events, outputs

    def linked(self, events: ak.Array, output: ak.Array) -> ak.Array:
        """The drawn ``output`` with its ``link`` field: each object's nearest object of ``link.collection`` within ``link.max_dr``."""
        link = self.spec.link
        assert link is not None
        if link.collection not in events.fields or not {"eta", "phi"} <= set(events[link.collection].fields):
            raise ChainError(f"unit {self.name!r}: link.collection {link.collection!r} (for {self.spec.output}_{link.field}) needs "
                             f"{link.collection}_eta and _phi from an earlier unit; the events have {sorted(events.fields)}")
        return ak.with_field(output, nearest(output, events[link.collection], link.max_dr), link.field)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, directory: Path, record: Mapping[str, Any] | None = None) -> Path:
        """Write fitted preprocessing, weights and training record beside the spec (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.trained_model(), directory / "model")
        for name in ("efficiency", "multiplicity"):
            classifier = getattr(self, name)
            if classifier is not None:
                save_model(classifier, directory / name)
        state = {
            "format_version": FORMAT_VERSION,
            "unit": self.name,
            "context": self.context_pipeline.to_dict(),
            "targets": self.target_pipeline.to_dict(),
        }
        atomic_write_text(directory / "preprocessing.json", json.dumps(state, indent=1))
        if record is not None:
            atomic_write_text(directory / "training.json", json.dumps(record, indent=1, default=str))
        write_digests(directory, self.spec)
        return directory


def load_unit(name_or_path: str | Path, device: str | torch.device = "cpu", require_trained: bool = True,
              precision: str = "float32") -> Unit:
    """Load a unit (spec, preprocessing, weights) from the zoo or a directory; never unpickles. ``precision``: that of a
    coupling flow's conditioner networks when sampling (:data:`flashsim.models.PRECISIONS`)."""
    precision_dtype(precision)
    directory = resolve_unit_dir(name_or_path)
    spec = UnitSpec.load(directory / "unit.toml")
    state_path = directory / "preprocessing.json"
    if not state_path.is_file():
        if require_trained:
            raise UnitError(f"unit {spec.name!r} ({directory}) has no trained weights; run `flashsim train {spec.name}`")
        return Unit(spec)
    check_digests(directory, spec)
    state = _strict_json(state_path, f"unit {spec.name!r}")
    if state.get("format_version") != FORMAT_VERSION:
        raise UnitError(
            f"unit {spec.name!r}: {state_path} has format_version {state.get('format_version')!r}, "
            f"this flashsim reads {FORMAT_VERSION}; retrain the unit or use a matching flashsim"
        )
    try:
        context = ContextPipeline.from_dict(state["context"])
        targets = TargetPipeline.from_dict(state["targets"])
        models: dict[str, Any] = {name: load_model(directory / name, device) if (directory / f"{name}.safetensors").exists() else None
                                  for name in ("model", "efficiency", "multiplicity")}
    except Exception as exc:  # safetensors / json / shape errors on damaged files
        raise UnitError(f"unit {spec.name!r} ({directory}): cannot load weights or preprocessing: {exc}") from exc
    if models["model"] is None:
        raise UnitError(f"unit {spec.name!r} ({directory}): model.safetensors is missing")
    classifier = spec.kind.classifier
    if classifier is not None and spec.kind.classifier_config(spec) is not None and models[classifier] is None:
        raise UnitError(f"unit {spec.name!r} ({directory}): {classifier}.safetensors is missing, "
                        f"but the unit declares a {classifier} model; retrain it (`flashsim train {spec.name}`)")
    declared_pipelines = (TargetPipeline(spec.targets), ContextPipeline(spec.context_steps()))
    for what, fitted, declared in zip(("targets", "context"), (targets, context), declared_pipelines):
        if fitted.config != declared.config:
            changed = next(f"{a} -> {b}" for a, b in zip([*fitted.config, None], [*declared.config, None]) if a != b)
            raise UnitError(f"unit {spec.name!r} ({directory}): the {what} of unit.toml differ from the trained "
                            f"preprocessing.json (first: {changed}); retrain it (`flashsim train {spec.name}`)")
    for model in models.values():
        if model is not None:
            model.name = spec.name
            model.to(device).eval()  # a loaded unit samples: no mode switch per call
    cast(ConditionalModel, models["model"]).precision = precision
    return Unit(spec, context, targets, cast(ConditionalModel, models["model"]), cast(EfficiencyModel | None, models["efficiency"]),
                cast(EfficiencyModel | None, models["multiplicity"]))


def attach(events: ak.Array, name: str, output: ak.Array, merge: bool = False, sort_by: str | None = "pt") -> ak.Array:
    """Attach a collection to the events; ``merge`` appends to an existing one (or creates it). Objects are sorted by
    ``sort_by`` (descending); cross-references of the other collections into a merged one (``Photon.electronIdx``)
    follow its objects to their new places. A merged collection's back-references (``Jet.nElectrons``) that the new
    objects lack are dropped: the chain recomputes them after the unit (:mod:`flashsim.crossrefs`)."""
    before = None
    if merge and name in events.fields:
        existing = events[name]
        derived = derived_fields(name) - set(output.fields)  # back-references, recomputed by the chain after the unit
        existing = existing[[f for f in existing.fields if f not in derived]]
        common = [f for f in existing.fields if f in output.fields]
        missing = sorted(set(existing.fields) ^ set(output.fields))
        if missing:
            raise UnitError(f"cannot merge into {name!r}: fields differ ({missing})")
        before = ak.to_numpy(ak.num(existing, axis=1))
        output = ak.concatenate([existing[common], output[common]], axis=1)
    if sort_by and output.ndim == 2 and sort_by in output.fields:
        order = ak.argsort(output[sort_by], axis=1, ascending=False, stable=True)
        output = output[order]
        if before is not None:
            events = _renumber_references(events, name, order, before)
    return ak.with_field(events, output, name)


def _renumber_references(events: ak.Array, name: str, order: ak.Array, before: np.ndarray) -> ak.Array:
    """Point the other collections' cross-references into ``name`` (its first ``before`` objects per event) to where
    ``order`` moved those objects."""
    counts = ak.to_numpy(ak.num(order, axis=1))
    starts = np.r_[0, np.cumsum(counts)][:-1]
    evt = np.repeat(np.arange(len(counts)), counts)
    new_place = np.empty(len(evt), np.int64)
    new_place[starts[evt] + flat(order).astype(np.int64)] = np.arange(len(evt)) - starts[evt]
    for other in events.fields:
        collection = events[other]
        fields = references_to(name, collection.fields) if other != name and collection.ndim == 2 else []
        if not fields:
            continue
        other_counts = ak.to_numpy(ak.num(collection, axis=1))  # once per referring collection, not per field
        owner = np.repeat(np.arange(len(counts)), other_counts)
        limit, base = before[owner], starts[owner]
        for field in fields:
            index = flat(collection[field])
            old, _ = pointing(index, limit)
            values = index.copy()
            values[old] = new_place[base[old] + index[old]]
            collection = ak.with_field(collection, ak.unflatten(values, other_counts), field)
        events = ak.with_field(events, collection, other)
    return events


DIGESTS = "digests.json"  # SHA-256 of every file a trained unit needs, written last by Unit.save


def unit_files(spec: UnitSpec) -> list[str]:
    """The files a trained unit needs besides unit.toml: preprocessing, the model and its kind's classifier."""
    names = ["preprocessing.json", "model.safetensors", "model.json"]
    classifier = spec.kind.classifier
    if classifier is not None and spec.kind.classifier_config(spec) is not None:
        names += [f"{classifier}.safetensors", f"{classifier}.json"]
    return names


def write_digests(directory: Path, spec: UnitSpec) -> Path:
    """Record the SHA-256 of the unit's files (after they are all written: a half-saved unit has none)."""
    digests = {name: file_digest(directory / name) for name in unit_files(spec)}
    return atomic_write_text(directory / DIGESTS, json.dumps({"format": "flashsim-unit-digests", "sha256": digests}, indent=1))


def check_digests(directory: Path, spec: UnitSpec) -> None:
    """Refuse a unit with a file missing or changed since training (truncated, bit-flipped, replaced)."""
    path = directory / DIGESTS
    where = f"unit {spec.name!r} ({directory})"
    if not path.is_file():
        raise UnitError(f"{where}: no {DIGESTS} (the SHA-256 of its files, written by `flashsim train`): "
                        f"the unit is incomplete or older than this flashsim; retrain it (`flashsim train {spec.name}`)")
    recorded = _strict_json(path, where).get("sha256", {})
    for name in unit_files(spec):
        if not (directory / name).is_file():
            raise UnitError(f"{where}: {name} is missing; retrain the unit (`flashsim train {spec.name}`)")
        if recorded.get(name) != file_digest(directory / name):
            raise UnitError(f"{where}: {name} differs from the file training wrote (SHA-256 in {DIGESTS}): damaged or "
                            f"replaced; restore it or retrain the unit (`flashsim train {spec.name}`)")


def _strict_json(path: Path, where: str) -> dict[str, Any]:
    """A JSON object with no NaN or infinity."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a number flashsim accepts")

    try:
        data = json.loads(path.read_text(), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UnitError(f"{where}: corrupted {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UnitError(f"{where}: {path} is not a JSON object")
    return data
