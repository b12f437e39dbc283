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
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch

from flashsim import event_outputs, features
from flashsim.errors import InputError, UnitError
from flashsim.models import build_model, load_model, save_model
from flashsim.transforms import ContextPipeline, TargetPipeline
from flashsim.zoo import resolve_unit_dir

__all__ = ["FORMAT_VERSION", "UnitSpec", "Unit", "load_unit", "POSITION", "PREVIOUS"]

FORMAT_VERSION = 1
UnitType = Literal["object", "multiplicity", "event"]
POSITION = "position"  # context column of multiplicity units: index of the object being drawn
ORDER_REDRAWS = 20  # multiplicity units: redraws of an object drawn out of sort_by order before it is capped
PREVIOUS = "prev_"  # prefix of multiplicity context columns holding the previous object's values (0 for the first)

_SPEC_KEYS = {
    "name", "format_version", "type", "description", "output", "source", "context", "targets",
    "carry", "constants", "output_selection", "output_rules", "gen_index", "efficiency", "model", "multiplicity", "merge", "sort_by",
    "selection", "event_columns", "target_features", "training_selection", "outputs",
}
_EVENT_ONLY_KEYS = ("selection", "event_columns", "target_features", "training_selection", "outputs")
RECO_PREFIX = "reco_"  # targets in a training_selection expression


@dataclass
class UnitSpec:
    """What a unit is: its rows, conditioning columns, targets and model, as read from unit.toml."""

    name: str
    type: UnitType
    output: str
    context: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    model: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    carry: dict[str, str] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    output_selection: str | None = None  # reco-level cut applied after sampling (e.g. NanoAOD's jet pt > 15)
    output_rules: list[dict[str, Any]] = field(default_factory=list)  # {where, columns, value}, applied in order after sampling
    gen_index: str | None = None
    efficiency: dict[str, Any] | None = None
    multiplicity: dict[str, Any] | None = None
    merge: bool = False
    sort_by: str | None = "pt"
    description: str = ""
    path: Path | None = None
    selection: str | None = None
    event_columns: list[dict[str, Any]] = field(default_factory=list)
    target_features: list[dict[str, Any]] = field(default_factory=list)
    training_selection: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> UnitSpec:
        where = f"unit spec {path or data.get('name', '?')}"
        unknown = set(data) - _SPEC_KEYS
        if unknown:
            raise UnitError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_SPEC_KEYS)})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise UnitError(f"{where}: format_version {version!r} is not supported by this flashsim (supports {FORMAT_VERSION})")
        for key in ("name", "type", "targets", "model"):
            if key not in data:
                raise UnitError(f"{where}: missing required key {key!r}")
        if "output" not in data and "outputs" not in data:
            raise UnitError(f"{where}: missing required key 'output' (or, for event units, 'outputs')")
        if data["type"] != "event" and any(k in data for k in _EVENT_ONLY_KEYS):
            raise UnitError(f"{where}: {[k for k in _EVENT_ONLY_KEYS if k in data]} are only for event units")
        if "outputs" in data:
            event_outputs.check_outputs(data["outputs"], where)
        if data["type"] not in ("object", "multiplicity", "event"):
            raise UnitError(f"{where}: type {data['type']!r} must be object, multiplicity or event")
        if data["type"] == "object" and "collection" not in data.get("source", {}):
            raise UnitError(f"{where}: object units need source.collection")
        if data["type"] == "multiplicity" and "max_objects" not in data.get("multiplicity", {}):
            raise UnitError(f"{where}: multiplicity units need multiplicity.max_objects")
        output = data.get("output") or data["outputs"][0]["collection"]
        spec = cls(
            name=data["name"], type=data["type"], output=output, context=list(data.get("context", [])),
            targets=list(data["targets"]), model=dict(data["model"]), source=dict(data.get("source", {})),
            carry=dict(data.get("carry", {})), constants=dict(data.get("constants", {})),
            output_selection=data.get("output_selection"), output_rules=list(data.get("output_rules", [])),
            gen_index=data.get("gen_index"), efficiency=data.get("efficiency"),
            multiplicity=data.get("multiplicity"), merge=bool(data.get("merge", False)),
            sort_by=data.get("sort_by", "pt"), description=data.get("description", ""), path=path,
            selection=data.get("selection"), event_columns=list(data.get("event_columns", [])),
            target_features=list(data.get("target_features", [])), training_selection=data.get("training_selection"),
            outputs=list(data.get("outputs", [])),
        )
        for entry in spec.context + spec.event_columns + spec.target_features:
            features.feature_names(entry)  # validates the table
        _check_output_rules(spec, where)
        if spec.target_features:
            derived = {n for entry in spec.target_features for n in features.feature_names(entry)}
            missing = [c for c in spec.target_columns if c not in derived]
            if missing:
                raise UnitError(f"{where}: targets {missing} are not produced by target_features (which give {sorted(derived)})")
        if spec.outputs:
            known = set(spec.target_columns) | {n for e in spec.context + spec.event_columns for n in features.feature_names(e)}
            unknown = sorted(event_outputs.columns_read(spec.outputs) - known)
            if unknown:
                raise UnitError(f"{where}: outputs read {unknown}, which are neither targets nor context/event columns")
        return spec

    @classmethod
    def load(cls, path: Path) -> UnitSpec:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UnitError(f"cannot read unit spec {path}: {exc}") from exc
        return cls.from_dict(data, path)

    @property
    def previous_columns(self) -> list[str]:
        """Multiplicity units: target columns of the previous object that condition the next one."""
        return list((self.multiplicity or {}).get("previous", [])) if self.type == "multiplicity" else []

    @property
    def context_columns(self) -> list[str]:
        names = [n for entry in self.context for n in features.feature_names(entry)]
        if self.type == "multiplicity":
            names += [POSITION] + [PREVIOUS + c for c in self.previous_columns]
        return names

    @property
    def target_columns(self) -> list[str]:
        return [c for entry in self.targets for c in entry.get("columns", [entry.get("column")])]

    @property
    def produces(self) -> list[str]:
        """Collections this unit writes (several for an event unit with ``outputs``)."""
        return event_outputs.output_collections(self.outputs) if self.outputs else [self.output]

    @property
    def inputs(self) -> set[str]:
        """Collections this unit reads."""
        used = {self.source["collection"]} if "collection" in self.source else set()
        for entry in self.context + self.event_columns:
            used |= features.collections_used(entry)
        if self.merge:
            used.add(self.output)
        return used

    def context_steps(self) -> list[dict[str, Any]]:
        """Preprocessing of every context column (default: standardise)."""
        out = []
        for entry in self.context:
            steps = entry.get("steps", [{"type": "standardize"}])
            out.extend({"column": n, "steps": steps} for n in features.feature_names(entry))
        if self.type == "multiplicity":
            out += [{"column": c, "steps": [{"type": "standardize"}]} for c in self.context_columns[-1 - len(self.previous_columns):]]
        return out


def _seed(seed: int, *keys: str | int) -> int:
    """A 63-bit seed derived from a global seed and names (stable across runs and machines)."""
    words = [seed & 0xFFFFFFFF, seed >> 32] + [zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _flat(values: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(values, axis=None) if values.ndim > 1 else values).astype(np.float64)


class Unit:
    """A unit ready to run: spec + fitted preprocessing + models (untrained units cannot run)."""

    def __init__(self, spec: UnitSpec, context: ContextPipeline | None = None, targets: TargetPipeline | None = None,
                 model: torch.nn.Module | None = None, efficiency: torch.nn.Module | None = None,
                 multiplicity: torch.nn.Module | None = None) -> None:
        self.spec = spec
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
        if self.spec.type != "object":
            return None
        coll = self.spec.source["collection"]
        if coll not in events.fields:
            raise InputError(f"unit {self.name!r}: source collection {coll!r} not in the events (have {sorted(events.fields)})")
        objects = events[coll]
        objects = ak.with_field(objects, ak.local_index(objects, axis=1), "_index")
        cut = self.spec.source.get("selection")
        return objects[features.select(cut, objects, f"unit {self.name!r} selection")] if cut else objects

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
        names = _expression_names(self.spec.selection)
        columns = {k: v for k, v in self.event_columns(events).items() if k in names}
        if names - set(columns):
            columns |= {k: v for k, v in self.context_columns(events, None).items() if k in names}
        return _evaluate(self.spec.selection, columns, len(events), f"unit {self.name!r} selection")

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
        names = _expression_names(self.spec.training_selection)
        columns = {k: v for k, v in context.items() if k in names}
        columns |= {RECO_PREFIX + k: v for k, v in targets.items() if RECO_PREFIX + k in names}
        if names - set(columns):
            columns |= {k: v for k, v in self.event_columns(events).items() if k in names}
        return _evaluate(self.spec.training_selection, columns, len(events), f"unit {self.name!r} training_selection")

    # ---- generation ---------------------------------------------------------------------------

    def _require_trained(self) -> None:
        if self.model is None:
            where = self.spec.path.parent if self.spec.path else self.name
            raise UnitError(f"unit {self.name!r} ({where}) has no trained weights; run `flashsim train {self.name}`")

    def _draw(self, model: torch.nn.Module, context: np.ndarray, generator: torch.Generator, device: torch.device,
              batch_size: int) -> np.ndarray:
        out = []
        for start in range(0, len(context), batch_size):
            ctx = torch.as_tensor(context[start : start + batch_size], device=device)
            out.append(model.sample(ctx, generator).detach().cpu().numpy())
        if not out:
            return np.zeros((0, self.target_pipeline.n_features), np.float32)
        return np.concatenate(out)

    def _decide(self, model: torch.nn.Module, context: np.ndarray, generator: torch.Generator, device: torch.device,
                batch_size: int) -> np.ndarray:
        out = [model.sample(torch.as_tensor(context[s : s + batch_size], device=device), generator).cpu().numpy()
               for s in range(0, len(context), batch_size)]
        return np.concatenate(out).astype(bool) if out else np.zeros(0, bool)

    def run(self, events: ak.Array, seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 100_000) -> ak.Array:
        """Return ``events`` with this unit's output collection attached (or merged)."""
        self._require_trained()
        device = torch.device(device)
        generator = torch.Generator(device=device).manual_seed(_seed(seed, self.name))
        if self.spec.type == "object":
            output = self._run_object(events, generator, device, batch_size)
        elif self.spec.type == "event":
            events, outputs = self._run_event(events, generator, device, batch_size)
            for name, collection in outputs.items():
                events = attach(events, name, collection, merge=self.spec.merge, sort_by=self.spec.sort_by)
            return events
        else:
            output = self._run_multiplicity(events, generator, device, batch_size)
        output = self._apply_output_rules(output)
        if self.spec.output_selection:
            output = output[features.select(self.spec.output_selection, output, f"unit {self.name!r} output_selection")]
        return attach(events, self.spec.output, output, merge=self.spec.merge, sort_by=self.spec.sort_by)

    def _apply_output_rules(self, output: ak.Array) -> ak.Array:
        """Apply the ``output_rules`` in order: set the rule's columns to its value where its cut on the
        drawn columns holds (a tagger is -1 outside the tracker; jet ID follows the energy fractions)."""
        for rule in self.spec.output_rules:
            mask = features.select(rule["where"], output, f"unit {self.name!r} output_rules")
            for column in rule["columns"]:
                dtype = ak.to_numpy(ak.flatten(output[column], axis=None)).dtype
                output = ak.with_field(output, ak.values_astype(ak.where(mask, rule["value"], output[column]), dtype), column)
        return output

    def _context_array(self, columns: Mapping[str, ak.Array]) -> np.ndarray:
        return self.context_pipeline.forward({k: _flat(v) for k, v in columns.items()})

    def _run_object(self, events: ak.Array, generator: torch.Generator, device: torch.device, batch_size: int) -> ak.Array:
        rows = self.rows(events)
        assert rows is not None
        context = self._context_array(self.context_columns(events, rows))
        counts = ak.to_numpy(ak.num(rows, axis=1))
        if self.efficiency is not None:
            keep = self._decide(self.efficiency, context, generator, device, batch_size)
        else:
            keep = np.ones(len(context), bool)
        refs = {k: _flat(v)[keep] for k, v in self.reference_columns(events, rows).items()}
        sampled = self._draw(self.model, context[keep], generator, device, batch_size)
        columns = self.target_pipeline.inverse(sampled, refs)
        kept_counts = ak.to_numpy(ak.sum(ak.unflatten(keep, counts), axis=1))
        for out_name, src_name in self.spec.carry.items():
            columns[out_name] = ak.to_numpy(ak.flatten(rows[src_name]))[keep]
        if self.spec.gen_index:
            columns[self.spec.gen_index] = ak.to_numpy(ak.flatten(rows["_index"]))[keep].astype(np.int32)
        _add_constants(columns, self.spec.constants, int(keep.sum()))
        return ak.zip({k: ak.unflatten(v, kept_counts) for k, v in columns.items()})

    def _run_event(self, events: ak.Array, generator: torch.Generator, device: torch.device,
                   batch_size: int) -> tuple[ak.Array, dict[str, ak.Array]]:
        """The selected events and the output collection(s) drawn for them."""
        keep = self.event_mask(events)
        if keep is not None:
            events = events[keep]
        raw = self.context_columns(events, None)
        context = self._context_array(raw)
        refs = {k: _flat(v) for k, v in self.reference_columns(events, None, raw).items()}
        columns = self.target_pipeline.inverse(self._draw(self.model, context, generator, device, batch_size), refs)
        if not self.spec.outputs:
            return events, {self.spec.output: ak.zip(columns, depth_limit=1)}
        available = {k: _flat(v) for k, v in (raw | self.event_columns(events)).items()} | columns
        return events, event_outputs.build_collections(self.spec.outputs, available, len(events))

    def _run_multiplicity(self, events: ak.Array, generator: torch.Generator, device: torch.device, batch_size: int) -> ak.Array:
        assert self.spec.multiplicity is not None and self.multiplicity is not None
        n_max = int(self.spec.multiplicity["max_objects"])
        previous = self.spec.previous_columns
        raw = {k: _flat(v) for k, v in self.context_columns(events, None).items()}
        raw |= {PREVIOUS + c: np.zeros(len(events)) for c in previous}
        alive = np.ones(len(events), bool)
        counts = np.zeros(len(events), np.int64)
        drawn: list[dict[str, np.ndarray]] = []  # per position: inverse-transformed objects of the events still alive
        owners: list[np.ndarray] = []
        for position in range(n_max):
            idx = np.flatnonzero(alive)
            if len(idx) == 0:
                break
            context = self.context_pipeline.forward({**{k: v[idx] for k, v in raw.items()}, POSITION: np.full(len(idx), float(position))})
            more = self._decide(self.multiplicity, context, generator, device, batch_size)
            alive[idx[~more]] = False
            idx, context = idx[more], context[more]
            if len(idx) == 0:
                break
            refs = {r: raw[r][idx] for r in self.target_pipeline.references}  # previous-object columns
            objects = self.target_pipeline.inverse(self._draw(self.model, context, generator, device, batch_size), refs)
            if position > 0 and self.spec.sort_by in previous:
                self._keep_order(objects, raw[PREVIOUS + self.spec.sort_by][idx], context, refs, generator, device, batch_size)
            for c in previous:
                raw[PREVIOUS + c][idx] = objects[c]
            drawn.append(objects)
            owners.append(idx)
            counts[idx] += 1
        if drawn:
            order = np.argsort(np.concatenate(owners), kind="stable")
            columns = {c: np.concatenate([d[c] for d in drawn])[order] for c in drawn[0]}
        else:
            columns = self.target_pipeline.inverse(np.zeros((0, self.target_pipeline.n_features), np.float32), {})
        _add_constants(columns, self.spec.constants, int(counts.sum()))
        return ak.zip({k: ak.unflatten(v, counts) for k, v in columns.items()})

    def _keep_order(self, objects: dict[str, np.ndarray], previous: np.ndarray, context: np.ndarray,
                    refs: Mapping[str, np.ndarray], generator: torch.Generator, device: torch.device, batch_size: int) -> None:
        """Redraw objects that would sort before the previous one (the flow's leak across the ordering edge),
        up to ``ORDER_REDRAWS`` times, then cap the rest at it: the model's density truncated to descending order."""
        key = self.spec.sort_by
        assert key is not None
        for _ in range(ORDER_REDRAWS):
            bad = np.flatnonzero(objects[key] > previous)
            if len(bad) == 0:
                return
            redrawn = self.target_pipeline.inverse(self._draw(self.model, context[bad], generator, device, batch_size),
                                                   {r: v[bad] for r, v in refs.items()})
            for column, values in redrawn.items():
                objects[column][bad] = values
        objects[key] = np.minimum(objects[key], previous).astype(objects[key].dtype)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, directory: Path, record: Mapping[str, Any] | None = None) -> Path:
        """Write fitted preprocessing, weights and training record beside the spec (no pickle)."""
        directory.mkdir(parents=True, exist_ok=True)
        self._require_trained()
        save_model(self.model, directory / "model")
        for name in ("efficiency", "multiplicity"):
            model = getattr(self, name)
            if model is not None:
                save_model(model, directory / name)
        state = {
            "format_version": FORMAT_VERSION,
            "unit": self.name,
            "context": self.context_pipeline.to_dict(),
            "targets": self.target_pipeline.to_dict(),
        }
        _atomic_write(directory / "preprocessing.json", json.dumps(state, indent=1))
        if record is not None:
            _atomic_write(directory / "training.json", json.dumps(record, indent=1, default=str))
        return directory


def _check_output_rules(spec: UnitSpec, where: str) -> None:
    for i, rule in enumerate(spec.output_rules):
        here = f"{where}: output_rules[{i}]"
        if not isinstance(rule, Mapping) or set(rule) != {"where", "columns", "value"}:
            raise UnitError(f"{here} must be a table with exactly where, columns and value, got {rule!r}")
        if not isinstance(rule["where"], str) or not isinstance(rule["value"], (int, float)):
            raise UnitError(f"{here}: where must be a cut (string) and value a number, got {rule!r}")
        unknown = [c for c in rule["columns"] if c not in spec.target_columns]
        if not rule["columns"] or unknown:
            raise UnitError(f"{here}: columns {unknown or rule['columns']} are not targets of the unit ({spec.target_columns})")


def _expression_names(expression: str) -> set[str]:
    import ast

    try:
        return {n.id for n in ast.walk(ast.parse(expression, mode="eval")) if isinstance(n, ast.Name)}
    except SyntaxError as exc:
        raise UnitError(f"cannot parse {expression!r}: {exc.msg}") from exc


def _evaluate(expression: str, columns: Mapping[str, Any], n: int, where: str) -> np.ndarray:
    """A cut on per-event columns as a boolean numpy mask (NaN compares False)."""
    if not columns:
        raise UnitError(f"{where}: {expression!r} names no per-event column")
    mask = features.select(expression, ak.zip(dict(columns), depth_limit=1), where)
    return np.asarray(ak.to_numpy(mask), dtype=bool) if isinstance(mask, ak.Array) else np.full(n, bool(mask))


def _add_constants(columns: dict[str, np.ndarray], constants: Mapping[str, Any], n: int) -> None:
    """Fixed-valued output fields (e.g. a fake jet's genJetIdx = -1, a muon's mass)."""
    for name, value in constants.items():
        columns[name] = np.full(n, value, dtype=np.int32 if isinstance(value, int) else np.float32)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def load_unit(name_or_path: str | Path, device: str | torch.device = "cpu", require_trained: bool = True) -> Unit:
    """Load a unit (spec, preprocessing, weights) from the zoo or a directory; never unpickles."""
    directory = resolve_unit_dir(name_or_path)
    spec = UnitSpec.load(directory / "unit.toml")
    state_path = directory / "preprocessing.json"
    if not state_path.is_file():
        if require_trained:
            raise UnitError(f"unit {spec.name!r} ({directory}) has no trained weights; run `flashsim train {spec.name}`")
        return Unit(spec)
    try:
        state = json.loads(state_path.read_text())
    except ValueError as exc:
        raise UnitError(f"unit {spec.name!r}: corrupted {state_path}: {exc}") from exc
    if state.get("format_version") != FORMAT_VERSION:
        raise UnitError(
            f"unit {spec.name!r}: {state_path} has format_version {state.get('format_version')!r}, "
            f"this flashsim reads {FORMAT_VERSION}; retrain the unit or use a matching flashsim"
        )
    try:
        context = ContextPipeline.from_dict(state["context"])
        targets = TargetPipeline.from_dict(state["targets"])
        models = {name: load_model(directory / name, device) if (directory / f"{name}.safetensors").exists() else None
                  for name in ("model", "efficiency", "multiplicity")}
    except UnitError:
        raise
    except Exception as exc:  # safetensors / json / shape errors on damaged files
        raise UnitError(f"unit {spec.name!r} ({directory}): cannot load weights or preprocessing: {exc}") from exc
    if models["model"] is None:
        raise UnitError(f"unit {spec.name!r} ({directory}): model.safetensors is missing")
    try:
        declared_pipelines = (TargetPipeline(spec.targets), ContextPipeline(spec.context_steps()))
    except ValueError as exc:
        raise UnitError(f"unit {spec.name!r} ({directory}): unit.toml: {exc}") from exc
    for what, fitted, declared in zip(("targets", "context"), (targets, context), declared_pipelines):
        if fitted.config != declared.config:
            changed = next(f"{a} -> {b}" for a, b in zip([*fitted.config, None], [*declared.config, None]) if a != b)
            raise UnitError(f"unit {spec.name!r} ({directory}): the {what} of unit.toml differ from the trained "
                            f"preprocessing.json (first: {changed}); retrain it (`flashsim train {spec.name}`)")
    for model in models.values():
        if model is not None:
            model.name = spec.name
            model.to(device)
    return Unit(spec, context, targets, models["model"], models["efficiency"], models["multiplicity"])


def attach(events: ak.Array, name: str, output: ak.Array, merge: bool = False, sort_by: str | None = "pt") -> ak.Array:
    """Attach a collection to the events; ``merge`` appends to an existing one. Objects are sorted by ``sort_by`` (descending)."""
    if merge and name in events.fields:
        existing = events[name]
        common = [f for f in existing.fields if f in output.fields]
        missing = sorted(set(existing.fields) ^ set(output.fields))
        if missing:
            raise UnitError(f"cannot merge into {name!r}: fields differ ({missing})")
        output = ak.concatenate([existing[common], output[common]], axis=1)
    if sort_by and output.ndim == 2 and sort_by in output.fields:
        output = output[ak.argsort(output[sort_by], axis=1, ascending=False, stable=True)]
    return ak.with_field(events, output, name)
