"""Output mapping of event units: several NanoAOD collections built from one sampled vector.

An analysis-specific event unit (Chen et al. 2021) draws one vector per event, e.g. muon
(px, py, pz), jet (px, py, pz, mass) and MET (x, y). ``outputs`` in its unit.toml says which
collections to write from it::

    outputs = [
      { collection = "Muon", momentum = { px = "mu_px", py = "mu_py", pz = "mu_pz" },
        carry = { genPartIdx = "mu_index" }, constants = { mass = 0.1056584 } },
      { collection = "Jet", momentum = { px = "jet_px", py = "jet_py", pz = "jet_pz", mass = "jet_mass" } },
      { collection = "MET", layout = "record", momentum = { px = "met_px", py = "met_py" } },
    ]

``momentum`` turns Cartesian columns into NanoAOD's pt, eta, phi (and mass) with ``vector``;
without ``pz`` only pt and phi are written (MET). ``fields`` copies columns under new names,
``carry`` copies event columns (cross-references such as ``genPartIdx``, written as int32),
``constants`` adds fixed values. ``layout = "list"`` (default) writes a one-entry collection
(``nMuon = 1``); ``layout = "record"`` one value per event (``MET_pt``), as NanoAOD does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import awkward as ak
import numpy as np
import vector

from flashsim.errors import UnitError
from flashsim.registry import suggest

__all__ = ["check_outputs", "output_collections", "columns_read", "build_collections"]

_KEYS = {"collection", "layout", "momentum", "fields", "carry", "constants"}
_MOMENTUM_KEYS = {"px", "py", "pz", "mass"}


def check_outputs(entries: Sequence[Mapping[str, Any]], where: str) -> None:
    """Fail early on a malformed ``outputs`` list (unknown keys, missing px/py, bad layout)."""
    if not isinstance(entries, Sequence) or not entries:
        raise UnitError(f"{where}: outputs must be a non-empty list of tables")
    seen = set()
    for entry in entries:
        if not isinstance(entry, Mapping) or "collection" not in entry:
            raise UnitError(f"{where}: every outputs entry needs a collection, got {entry!r}")
        unknown = set(entry) - _KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise UnitError(f"{where}: outputs entry {entry['collection']!r}: unknown key {key!r}{suggest(key, _KEYS)} (known: {sorted(_KEYS)})")
        if entry["collection"] in seen:
            raise UnitError(f"{where}: collection {entry['collection']!r} appears twice in outputs")
        seen.add(entry["collection"])
        if entry.get("layout", "list") not in ("list", "record"):
            raise UnitError(f"{where}: outputs entry {entry['collection']!r}: layout must be 'list' or 'record'")
        momentum = entry.get("momentum")
        if momentum is not None:
            if set(momentum) - _MOMENTUM_KEYS or not {"px", "py"} <= set(momentum):
                raise UnitError(f"{where}: outputs entry {entry['collection']!r}: momentum needs px, py (optional pz, mass), got {sorted(momentum)}")
            if "mass" in momentum and "pz" not in momentum:
                raise UnitError(f"{where}: outputs entry {entry['collection']!r}: momentum mass needs pz")


def output_collections(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return [e["collection"] for e in entries]


def columns_read(entries: Sequence[Mapping[str, Any]]) -> set[str]:
    """Names of the sampled or event columns the mapping reads."""
    used: set[str] = set()
    for e in entries:
        for key in ("momentum", "fields", "carry"):
            used |= set((e.get(key) or {}).values())
    return used


def _get(columns: Mapping[str, np.ndarray], name: str, collection: str) -> np.ndarray:
    if name not in columns:
        raise UnitError(f"output {collection!r}: column {name!r} is neither a target nor an event column (have {sorted(columns)})")
    return np.asarray(columns[name])


def build_collections(entries: Sequence[Mapping[str, Any]], columns: Mapping[str, np.ndarray], n: int) -> dict[str, ak.Array]:
    """The output collections for ``n`` events from sampled targets and event columns (name -> 1-D array)."""
    out: dict[str, ak.Array] = {}
    for entry in entries:
        name = entry["collection"]
        fields: dict[str, np.ndarray] = {}
        momentum = entry.get("momentum")
        if momentum is not None:
            comp = {k: _get(columns, v, name).astype(np.float64) for k, v in momentum.items()}
            if "pz" in comp:
                # vector.array is annotated as returning the VectorNumpy base, which lacks the
                # kinematic attributes; with these keys it builds a MomentumNumpy4D (2D below).
                p4 = cast(vector.MomentumNumpy4D,
                          vector.array({"px": comp["px"], "py": comp["py"], "pz": comp["pz"],
                                        "mass": np.maximum(comp.get("mass", np.zeros(n)), 0.0)}))
                fields |= {"pt": p4.pt, "eta": p4.eta, "phi": p4.phi}
                if "mass" in comp:
                    fields["mass"] = np.maximum(comp["mass"], 0.0)
            else:
                p2 = cast(vector.MomentumNumpy2D, vector.array({"px": comp["px"], "py": comp["py"]}))
                fields |= {"pt": p2.rho, "phi": p2.phi}
            fields = {k: np.asarray(v, np.float32) for k, v in fields.items()}
        for field, column in (entry.get("fields") or {}).items():
            fields[field] = _get(columns, column, name)
        for field, column in (entry.get("carry") or {}).items():
            fields[field] = _get(columns, column, name).astype(np.int32)
        for field, value in (entry.get("constants") or {}).items():
            fields[field] = np.full(n, value, dtype=np.int32 if isinstance(value, int) else np.float32)
        record = ak.zip(fields, depth_limit=1)
        out[name] = record if entry.get("layout", "list") == "record" else ak.unflatten(record, np.ones(n, np.int64))
    return out
