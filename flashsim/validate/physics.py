"""The physics metric of one unit on a validation GEN+RECO sample: the unit run on the sample's GEN (the reco
collections of earlier units taken from the sample itself) against the sample's own reco objects, target by target.

It chooses models by physics rather than by the validation NLL (checkpoint selection in ``flashsim train``,
``flashsim tune``): median and worst noise-floor ratio R over the unit's targets, and the classifier AUC beside
the same test between two reference halves (DESIGN.md, "Measuring fidelity without chasing noise").
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np
import torch

from flashsim.datasets import ExtractionReport, training_rows
from flashsim.errors import InputError
from flashsim.io import read_events
from flashsim.kinds import EVENT_ID
from flashsim.unit import Unit, attach
from flashsim.validate.metrics import EventValues, as_event_values, classifier_two_sample_test, event_splits, noise_floor_ratios
from flashsim.validate.report import jsonable

__all__ = ["PhysicsMetric", "physics_metric", "read_validation_events", "unit_input"]

AUC_WEIGHT = 2.0  # 2 (AUC - floor) runs from 0 (indistinguishable) to ~1 (separable), as R - 1 does for a poor target
_ROW = "_flashsim_row"  # the event's position in the validation sample, carried through the unit's event selection


@dataclass(frozen=True)
class PhysicsMetric:
    """Noise-floor ratios of the unit's targets (summed over event splits) and the classifier AUC."""

    median_ratio: float
    worst_ratio: float
    worst_target: str
    ratios: dict[str, float]
    auc: float
    auc_floor: float  # the same classifier between two halves of the reference
    events: int

    @property
    def score(self) -> float:
        """The objective, lower is better: median R plus ``AUC_WEIGHT`` times the AUC's excess over its floor."""
        excess = self.auc - self.auc_floor if math.isfinite(self.auc) and math.isfinite(self.auc_floor) else 0.0
        return self.median_ratio + AUC_WEIGHT * max(0.0, excess)

    def to_dict(self) -> dict[str, object]:
        return jsonable(asdict(self) | {"score": self.score})  # an infinite R as null: strict JSON


def read_validation_events(path: str | os.PathLike[str], max_events: int | None = None) -> ak.Array:
    """The events of a validation GEN+RECO file (the first ``max_events``); an :class:`InputError` if it is missing."""
    if not os.path.isfile(path):
        raise InputError(f"validation file {path} does not exist (a GEN+RECO NanoAOD whose events no training row came from)")
    events = read_events(path)
    return events[:max_events] if max_events is not None else events


def unit_input(unit: Unit, events: ak.Array) -> ak.Array:
    """GEN+RECO ``events`` as ``unit`` meets them in a chain: without the collections it writes, except one it merges
    into, whose objects from earlier units its context and rank read (as in training)."""
    kept = unit.spec.output if unit.spec.merge else None
    return events[[f for f in events.fields if f == kept or f not in unit.spec.produces]]


def physics_metric(unit: Unit, events: ak.Array, seed: int = 0, n_splits: int = 8,
                   device: str | torch.device = "cpu") -> PhysicsMetric:
    """Compare ``unit`` run on the GEN of ``events`` with their reco objects the unit models (its training targets)."""
    n = len(events)
    rows = training_rows(unit, events, np.arange(n, dtype=np.int64), ExtractionReport())
    labelled = rows["reconstructed"].astype(bool)
    ref_event = rows[EVENT_ID][labelled]
    columns = unit.spec.target_columns
    reference = {c: EventValues(np.asarray(rows[f"tgt.{c}"][labelled], np.float64), ref_event, n) for c in columns}

    # a merging unit's own objects alone are compared
    flashed, drawn = unit.collections(ak.with_field(unit_input(unit, events), np.arange(n), _ROW), seed, device)
    for name, collection in drawn.items():
        flashed = attach(flashed, name, collection, sort_by=unit.spec.sort_by)
    origin = ak.to_numpy(flashed[_ROW])
    flash: dict[str, EventValues] = {}
    for c, values in unit.target_values(flashed).items():
        ev = as_event_values(values)
        flash[c] = EventValues(np.asarray(ev.values, np.float64), origin[ev.event], n)
    if unit.spec.type == "event":  # one row per event: only the events the reference labels (training_selection)
        keep = np.isin(np.arange(n), ref_event)
        flash = {c: EventValues(v.values[keep[v.event]], v.event[keep[v.event]], n) for c, v in flash.items()}

    splits = event_splits(n, n, paired=True, n_splits=n_splits, seed=seed)
    ratios = {c: r.ratio for c, r in noise_floor_ratios(flash, reference, splits).items()}
    ranked = {c: math.inf if math.isnan(r) else r for c, r in ratios.items()}  # a target with no objects ranks worst
    worst = max(ranked, key=lambda c: ranked[c])
    first = flash[columns[0]]
    test = classifier_two_sample_test(np.stack([flash[c].values for c in columns], axis=1), first.event,
                                      np.stack([reference[c].values for c in columns], axis=1), ref_event, splits[0], seed=seed)
    return PhysicsMetric(median_ratio=float(np.median(list(ranked.values()))), worst_ratio=ranked[worst], worst_target=worst,
                         ratios=ratios, auc=test["auc"], auc_floor=test["auc_ref_halves"], events=n)
