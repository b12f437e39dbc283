"""Paired GEN/RECO training tables for a unit, from any NanoAOD with GEN and RECO collections.

Object units pair each selected GEN object with the reco object pointing to it through the
unit's cross-reference (``Jet_genJetIdx``, ``Muon_genPartIdx``); every GEN row carries a
``reconstructed`` label for the efficiency model. Multiplicity units take the reco objects
with no GEN partner; event units take one row per event. Columns are prefixed ``ctx.``
(conditioning), ``ref.`` (gen values targets are relative to) and ``tgt.`` (reco targets).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flashsim import features
from flashsim.errors import InputError, UnitError
from flashsim.events import from_branches
from flashsim.io import EventSource, open_source, resolve_inputs
from flashsim.unit import POSITION, PREVIOUS, Unit

__all__ = ["Dataset", "ExtractionReport", "extract", "extract_range", "load_dataset", "file_digest", "PLACEHOLDER_BELOW"]

PLACEHOLDER_BELOW = -999.0  # NanoAOD marks values not computed with e.g. -1000 or -3000
EVENT_ID = "event_id"


@dataclass
class ExtractionReport:
    """What extraction kept and rejected, to be shown to the user and stored with the table."""

    events: int = 0
    rows: int = 0
    matched: int = 0
    dangling_index: int = 0  # reco objects whose gen index points past the (pruned) collection
    placeholder_rows: dict[str, int] = field(default_factory=dict)
    non_finite_rows: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    spec_digest: str = ""  # what the rows were built for: the unit's context, targets and selection

    def summary(self) -> str:
        parts = [f"{self.events} events, {self.rows} rows, {self.matched} with a reco target"]
        if self.dangling_index:
            parts.append(f"{self.dangling_index} reco objects with an out-of-range gen index treated as unmatched")
        for col, n in self.placeholder_rows.items():
            parts.append(f"{n} rows dropped: placeholder value (< {PLACEHOLDER_BELOW}) in target {col!r}")
        for col, n in self.non_finite_rows.items():
            parts.append(f"{n} rows dropped: NaN/inf in {col!r}")
        return "; ".join(parts)

    def add(self, other: ExtractionReport) -> None:
        """Add the counts of ``other`` (e.g. one partition's) to this report; sources are not merged."""
        self.events += other.events
        self.rows += other.rows
        self.matched += other.matched
        self.dangling_index += other.dangling_index
        for mine, theirs in ((self.placeholder_rows, other.placeholder_rows), (self.non_finite_rows, other.non_finite_rows)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n


@dataclass
class Dataset:
    """A training table: named numpy columns plus the extraction report."""

    columns: dict[str, np.ndarray]
    report: ExtractionReport

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        """Columns ``prefix.<name>`` as ``{name: values}``."""
        return {k.split(".", 1)[1]: v for k, v in self.columns.items() if k.startswith(prefix + ".")}

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset({k: v[mask] for k, v in self.columns.items()}, self.report)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as Parquet (atomically) with the report and source hashes in the metadata."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(self.columns).replace_schema_metadata({"flashsim": json.dumps(self.report.__dict__)})
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        return path


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a table written by :meth:`Dataset.save`."""
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable flashsim dataset ({exc})") from exc
    meta = (table.schema.metadata or {}).get(b"flashsim")
    report = ExtractionReport(**json.loads(meta)) if meta else ExtractionReport()
    return Dataset({name: table.column(name).to_numpy() for name in table.column_names}, report)


def spec_digest(unit: Unit) -> str:
    """Digest of the parts of a unit spec that decide a training table's rows and columns."""
    spec = unit.spec
    relevant = [spec.type, spec.output, spec.source, spec.context, spec.targets, spec.gen_index, spec.multiplicity]
    if spec.selection or spec.event_columns or spec.target_features or spec.training_selection:
        relevant += [spec.selection, spec.event_columns, spec.target_features, spec.training_selection]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file (recorded so a cached dataset names exactly what it was built from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _flat(values: ak.Array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(values, axis=None) if values.ndim > 1 else values)


def _first_partner(source_counts: np.ndarray, reco_index: ak.Array) -> tuple[np.ndarray, int]:
    """For every source object, the flat position of the first reco object pointing to it (-1 if none)."""
    n_source = ak.to_numpy(source_counts)
    offsets = np.r_[0, np.cumsum(n_source)]
    index = ak.to_numpy(ak.flatten(reco_index)).astype(np.int64)
    event = np.repeat(np.arange(len(n_source)), ak.to_numpy(ak.num(reco_index, axis=1)))
    valid = (index >= 0) & (index < n_source[event])
    dangling = int(np.sum(index >= n_source[event]))
    partner = np.full(offsets[-1], -1, np.int64)
    positions = np.flatnonzero(valid)[::-1]  # assign in reverse so the first (leading) reco object wins
    partner[offsets[event[positions]] + index[positions]] = positions
    return partner, dangling


def _chunk_table(unit: Unit, events: ak.Array, event_ids: np.ndarray, report: ExtractionReport) -> dict[str, np.ndarray]:
    spec = unit.spec
    if spec.output not in events.fields:
        raise InputError(f"unit {unit.name!r}: reco collection {spec.output!r} not in the input (have {sorted(events.fields)})")
    reco = events[spec.output]
    missing = [c for c in spec.target_columns if c not in reco.fields] if not spec.target_features else []
    if missing:
        raise InputError(f"unit {unit.name!r}: target columns {missing} not in collection {spec.output!r} (has {reco.fields})")
    rows = unit.rows(events)
    if spec.type == "object":
        assert rows is not None and spec.gen_index is not None
        if spec.gen_index not in reco.fields:
            raise InputError(f"unit {unit.name!r}: cross-reference {spec.output}_{spec.gen_index} not in the input")
        source = events[spec.source["collection"]]
        partner, dangling = _first_partner(ak.num(source, axis=1), reco[spec.gen_index])
        report.dangling_index += dangling
        offsets = np.r_[0, np.cumsum(ak.to_numpy(ak.num(source, axis=1)))]
        row_event = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(rows, axis=1)))
        row_partner = partner[offsets[row_event] + _flat(rows["_index"]).astype(np.int64)]
        table = {EVENT_ID: event_ids[row_event], "reconstructed": row_partner >= 0}
        for name, values in unit.context_columns(events, rows).items():
            table[f"ctx.{name}"] = _flat(values).astype(np.float64)
        for name, values in unit.reference_columns(events, rows).items():
            table[f"ref.{name}"] = _flat(values).astype(np.float64)
        for col in spec.target_columns:
            flat = _flat(reco[col])
            values = np.zeros(len(row_partner), dtype=flat.dtype)
            values[row_partner >= 0] = flat[row_partner[row_partner >= 0]]
            table[f"tgt.{col}"] = values
        return table
    if spec.type == "event":
        keep = unit.event_mask(events)  # the unit's event selection (analysis-specific units)
        if keep is not None:
            events, event_ids = events[keep], event_ids[keep]
        context = unit.context_columns(events, None)
        targets = {c: _flat(v) for c, v in unit.target_values(events).items()}
        labelled = np.ones(len(events), bool)
        if spec.target_features:  # derived targets are NaN where no reco object is matched
            labelled &= np.logical_and.reduce([np.isfinite(np.asarray(v, np.float64)) for v in targets.values()])
        cut = unit.training_mask(events, context, targets)
        if cut is not None:
            labelled &= cut
        table = {EVENT_ID: event_ids, "reconstructed": labelled}
        table |= {f"ctx.{k}": _flat(v).astype(np.float64) for k, v in context.items()}
        table |= {f"ref.{k}": _flat(v).astype(np.float64) for k, v in unit.reference_columns(events, None, context).items()}
        table |= {f"tgt.{c}": v for c, v in targets.items()}
        return table
    # multiplicity: one row per (event, position) up to min(n, N-1); objects at positions < n carry targets
    assert spec.multiplicity is not None
    n_max = int(spec.multiplicity["max_objects"])
    cut = spec.multiplicity.get("selection")
    objects = reco[features.select(cut, reco, f"unit {unit.name!r} multiplicity.selection")] if cut else reco
    if spec.sort_by:
        objects = objects[ak.argsort(objects[spec.sort_by], axis=1, ascending=False, stable=True)]
    counts = ak.to_numpy(ak.num(objects, axis=1))
    n_rows = np.minimum(counts + 1, n_max)
    row_event = np.repeat(np.arange(len(events)), n_rows)
    position = np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)  # 0..n_rows-1 per event
    has_object = position < counts[row_event]
    context = {k: _flat(v).astype(np.float64) for k, v in unit.context_columns(events, None).items()}
    table = {EVENT_ID: event_ids[row_event], "reconstructed": has_object, f"ctx.{POSITION}": position.astype(np.float64)}
    table |= {f"ctx.{k}": v[row_event] for k, v in context.items()}
    padded = ak.pad_none(objects, n_max, axis=1, clip=True)
    for col in spec.target_columns:
        dense = ak.to_numpy(ak.fill_none(padded[col], 0))
        table[f"tgt.{col}"] = dense[row_event, np.minimum(position, n_max - 1)]
        if col in spec.previous_columns:
            table[f"ctx.{PREVIOUS}{col}"] = np.where(position > 0, dense[row_event, np.maximum(position - 1, 0)], 0).astype(np.float64)
    for ref in unit.target_pipeline.references:  # targets relative to the previous object (phi_difference to prev_phi)
        if f"ctx.{ref}" not in table:
            raise UnitError(f"unit {unit.name!r}: target reference {ref!r} is not a context column of this multiplicity unit "
                            f"(use one of {[PREVIOUS + c for c in spec.previous_columns]})")
        table[f"ref.{ref}"] = table[f"ctx.{ref}"]
    return table


def _drop_bad_rows(table: dict[str, np.ndarray], report: ExtractionReport, placeholders: bool = True) -> dict[str, np.ndarray]:
    """Drop rows with NaN/inf and (``placeholders``: raw NanoAOD targets only) placeholder values such as -3000."""
    keep = np.ones(len(table[EVENT_ID]), bool)
    labelled = table["reconstructed"]
    for name, values in table.items():
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values) & (labelled if name.startswith("tgt.") else True)
        if bad.any():
            report.non_finite_rows[name] = report.non_finite_rows.get(name, 0) + int(bad.sum())
            keep &= ~bad
        if name.startswith("tgt.") and placeholders:
            placeholder = (values < PLACEHOLDER_BELOW) & labelled
            if placeholder.any():
                report.placeholder_rows[name[4:]] = report.placeholder_rows.get(name[4:], 0) + int(placeholder.sum())
                keep &= ~placeholder
    return table if keep.all() else {k: v[keep] for k, v in table.items()}


def extract_range(unit: Unit, source: EventSource, file_index: int, start: int, stop: int,
                  report: ExtractionReport) -> dict[str, np.ndarray]:
    """Training rows from entries [start, stop) of one opened file, counted into ``report``.

    Event ids are ``file_index << 40 | entry``, so any split of the same files into ranges gives
    the same rows as one pass (the per-partition step of :func:`extract` and of scale-out).
    """
    events = from_branches(source.read(source.select(), start, stop))
    event_ids = (np.int64(file_index) << np.int64(40)) + start + np.arange(len(events), dtype=np.int64)
    # derived targets (px, pz...) may legitimately lie below the NanoAOD placeholder threshold
    table = _drop_bad_rows(_chunk_table(unit, events, event_ids, report), report, placeholders=not unit.spec.target_features)
    report.events += len(events)
    report.rows += len(table[EVENT_ID])
    report.matched += int(table["reconstructed"].sum())
    return table


def extract(
    unit: Unit,
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    step_size: int = 100_000,
    max_events: int | None = None,
    hash_sources: bool = True,
) -> Dataset:
    """Build the unit's training table from NanoAOD files; raises if nothing usable is found."""
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    report = ExtractionReport(spec_digest=spec_digest(unit))
    parts: list[dict[str, np.ndarray]] = []
    paths = resolve_inputs(inputs)
    for file_index, path in enumerate(paths):
        report.sources.append({"path": str(path), "bytes": path.stat().st_size,
                               "sha256": file_digest(path) if hash_sources else None})
        source = open_source(path)
        for start in range(0, source.num_entries, step_size):
            if max_events is not None and report.events >= max_events:
                break
            stop = min(start + step_size, source.num_entries)
            if max_events is not None:
                stop = min(stop, start + max_events - report.events)
            parts.append(extract_range(unit, source, file_index, start, stop, report))
    if report.matched == 0:
        raise InputError(f"unit {unit.name!r}: no row with a reco target in {[str(p) for p in paths]} ({report.summary()})")
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Dataset(columns, report)


def split_by_event(event_ids: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Boolean masks assigning whole events to each split (e.g. train/validation) with the given fractions."""
    unique = np.unique(event_ids)
    rng = np.random.default_rng(seed)
    u = rng.random(len(unique))
    edges = np.cumsum([0.0, *fractions])
    assignment = np.searchsorted(edges, u, side="right") - 1
    lookup = assignment[np.searchsorted(unique, event_ids)]
    return [lookup == i for i in range(len(fractions))]
