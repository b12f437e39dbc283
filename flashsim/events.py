"""The event model: NanoAOD branches <-> awkward records named like NanoAOD collections.

``events.GenJet.pt`` is a jagged collection (branches ``nGenJet``, ``GenJet_pt``),
``events.MET.pt`` a singleton record (branch ``MET_pt``), ``events.run`` a plain scalar.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from functools import cache

import awkward as ak
import numpy as np

__all__ = ["from_branches", "to_branches", "collection_of", "is_collection", "is_counter", "references_to", "pointing", "take", "pointed",
           "flat", "group_ranks"]


def collection_of(branch: str) -> str:
    """Name of the collection a branch belongs to (``Jet_pt`` -> ``Jet``, ``run`` -> ``run``)."""
    if is_counter(branch):
        return branch[1:]
    return branch.split("_", 1)[0]


def from_branches(branches: Mapping[str, ak.Array | np.ndarray]) -> ak.Array:
    """Group flat NanoAOD branches into an awkward event record (counters ``nX`` are dropped)."""
    counted = {collection_of(name) for name in branches if not is_counter(name)}  # incl. prefix-less LHEPdfWeight
    grouped: dict[str, dict[str, ak.Array | np.ndarray]] = defaultdict(dict)
    scalars: dict[str, ak.Array | np.ndarray] = {}
    for name, values in branches.items():
        if "_" in name:
            coll, field = name.split("_", 1)
            grouped[coll][field] = values
        elif not (is_counter(name) and name[1:] in counted):
            scalars[name] = values
    fields: dict[str, ak.Array] = {}
    for coll, cols in grouped.items():
        first = ak.Array(next(iter(cols.values())))
        if first.ndim > 1:
            fields[coll] = ak.zip(cols, with_name=coll)
        else:
            fields[coll] = ak.zip(cols, depth_limit=1, with_name=coll)
    for name, values in scalars.items():
        fields[name] = ak.Array(values)
    if not fields:
        return ak.Array([])
    return ak.zip(fields, depth_limit=1)


def is_counter(name: str) -> bool:
    """A NanoAOD counter branch such as ``nJet`` or ``nboostedTau`` (n + a collection name, no underscore)."""
    return name.startswith("n") and len(name) > 1 and "_" not in name


def is_collection(values: ak.Array) -> bool:
    """True for a jagged collection of records (one list per event)."""
    return bool(values.fields) and values.ndim == 2


def to_branches(events: ak.Array) -> dict[str, ak.Array]:
    """Flatten an event record to NanoAOD branches: ``nX`` counters, ``X_field``, prefix-less lists and scalars."""
    branches: dict[str, ak.Array] = {}
    for name in events.fields:
        values = events[name]
        if values.fields:
            if values.ndim == 2:
                branches[f"n{name}"] = ak.num(values, axis=1)
            for field in values.fields:
                branches[f"{name}_{field}"] = ak.without_parameters(values[field])
        else:
            if values.ndim == 2:  # a prefix-less jagged branch such as LHEPdfWeight
                branches[f"n{name}"] = ak.num(values, axis=1)
            branches[name] = ak.without_parameters(values)
    return branches


def references_to(collection: str, fields: list[str]) -> list[str]:
    """The fields that are NanoAOD cross-references into ``collection``: ``jetIdx``, ``electronIdx1``, ``genJetIdx``."""
    pattern = _reference_pattern(collection)
    return [f for f in fields if pattern.fullmatch(f)]


@cache
def _reference_pattern(collection: str) -> re.Pattern[str]:
    """``<collection, lower-case first>Idx<digits>``, compiled once per collection name."""
    return re.compile(re.escape(collection[:1].lower() + collection[1:]) + r"Idx\d*")


def pointing(index: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, int]:
    """Which cross-reference ``index`` values point to one of the ``n`` objects (``0 <= index < n``, element by element),
    and how many dangle: neither that nor NanoAOD's 'none' (-1)."""
    return (index >= 0) & (index < n), int(np.sum((index >= n) | (index < -1)))


def take(values: np.ndarray, counts: np.ndarray, event: np.ndarray, index: np.ndarray, fill: float = -1) -> tuple[np.ndarray, int]:
    """``values`` (flat, ``counts`` per event) of the object ``index`` (local) in each row's ``event``: ``fill`` where
    the index is -1 or out of range; also how many were out of range (NanoAOD's 'none' is -1)."""
    valid, dangling = pointing(index, counts[event])
    start = np.r_[0, np.cumsum(counts)][:-1]
    out = np.full(len(index), fill, values.dtype)
    out[valid] = values[start[event[valid]] + index[valid]]
    return out, dangling


def pointed(index: ak.Array, values: ak.Array, fill: float = 0) -> ak.Array:
    """Per object, ``values`` (jagged, same events) of the object its cross-reference ``index`` names; ``fill`` where -1
    (e.g. ``pointed(events.Electron.genPartIdx, events.GenPart.pdgId)``)."""
    return ak.fill_none(values[ak.mask(index, index >= 0)], fill, axis=-1)


def flat(values: ak.Array) -> np.ndarray:
    """A jagged or flat awkward column as a flat numpy array."""
    return ak.to_numpy(ak.flatten(values, axis=None) if values.ndim > 1 else values)


def group_ranks(group: np.ndarray, n_groups: int, within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items sorted by ``group`` (0 to ``n_groups`` - 1), then by ``within`` (else in their order): the sorting order,
    each sorted item's rank in its group (0: the first) and the number of items per group."""
    order = np.argsort(group, kind="stable") if within is None else np.lexsort((within, group))
    held = np.bincount(group, minlength=n_groups)
    return order, np.arange(len(order)) - (np.cumsum(held) - held)[group[order]], held
