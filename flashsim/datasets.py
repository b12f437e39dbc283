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

from flashsim.errors import InputError
from flashsim.events import from_branches
from flashsim.files import atomic_output, file_digest
from flashsim.io import EventSource, open_source, resolve_inputs
from flashsim.io.schema import versions_storing
from flashsim.kinds import EVENT_ID
from flashsim.unit import Unit

__all__ = ["Dataset", "ExtractionReport", "extract", "extract_range", "training_rows", "load_dataset", "PLACEHOLDER_BELOW"]

PLACEHOLDER_BELOW = -999.0  # NanoAOD marks values not computed with e.g. -1000 or -3000


@dataclass
class ExtractionReport:
    """What extraction kept and rejected, to be shown to the user and stored with the table."""

    events: int = 0
    rows: int = 0
    matched: int = 0
    dangling_index: int = 0  # reco objects whose gen index points past the (pruned) collection, or below -1
    shared_partner: int = 0  # source objects reached by more reco objects than their rank (match.rank, else 1): extra ones unused
    placeholder_rows: dict[str, int] = field(default_factory=dict)
    non_finite_rows: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    spec_digest: str = ""  # what the rows were built for: the unit's context, targets and selection

    def summary(self) -> str:
        parts = [f"{self.events} events, {self.rows} rows, {self.matched} with a reco target"]
        if self.dangling_index:
            parts.append(f"{self.dangling_index} reco objects with an out-of-range gen index treated as unmatched")
        if self.shared_partner:
            parts.append(f"{self.shared_partner} source objects reached by more reco objects than the unit's rank "
                         "(the target is the first, or the match.rank-th)")
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
        self.shared_partner += other.shared_partner
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
        with atomic_output(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
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
    relevant = unit.spec.digest_fields()
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def training_rows(unit: Unit, events: ak.Array, event_ids: np.ndarray, report: ExtractionReport) -> dict[str, np.ndarray]:
    """The unit's training rows of some events, those with NaN/inf or NanoAOD placeholders dropped (counted into ``report``)."""
    # derived targets (px, pz...) may legitimately lie below the NanoAOD placeholder threshold
    return _drop_bad_rows(unit.kind.training_rows(unit, events, event_ids, report), report, placeholders=not unit.spec.target_features)


def extract_range(unit: Unit, source: EventSource, file_index: int, start: int, stop: int,
                  report: ExtractionReport) -> dict[str, np.ndarray]:
    """Training rows from entries [start, stop) of one opened file, counted into ``report``.

    Event ids are ``file_index << 40 | entry``, so any split of the same files into ranges gives
    the same rows as one pass (the per-partition step of :func:`extract` and of scale-out).
    """
    missing = [b for b in unit.spec.reco_branches if b not in source.keys]
    if missing:
        raise InputError(f"{source.path}: this NanoAOD {source.version} file has no {', '.join(missing)}, which unit {unit.name!r} "
                         f"trains on (it trains from NanoAOD {', '.join(versions_storing(unit.spec.reco_branches, derived=True)) or 'none'})")
    events = from_branches(source.read(source.select(), start, stop))
    event_ids = (np.int64(file_index) << np.int64(40)) + start + np.arange(len(events), dtype=np.int64)
    table = training_rows(unit, events, event_ids, report)
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
        raise InputError(f"step_size must be positive, got {step_size}")
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
