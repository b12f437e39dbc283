"""Conditioning features by name: object fields, four-vector components, event fields, and
derived quantities (ΔR to the nearest objects, counts, sums, reco-minus-gen momentum, flag bits,
one-hot classes such as the jet flavour).

A feature is declared in a unit's TOML as a table, e.g. ``{field = "pt"}`` (``abs = true`` for
``|eta|``, ``name`` to use a field twice with different steps),
``{event = "Pileup.nTrueInt"}`` or ``{feature = "nearest", collection = "GenPart",
selection = "(abs(pdgId) == 13) & (status == 1)", k = 2}`` (``exclude_self = true`` when the
collection is the unit's own source: the nearest *other* jet); :func:`compute` turns it into named
columns aligned with the unit's rows (one per selected object, or one per event).

Per-event features of analysis-specific event units (Chen et al.): ``leading`` gives fields of
the leading object of a selected collection (or of the reco object matched to it, with
``reco``/``index``), ``delta_r`` the ΔR between the leading objects of two selections. Any
collection selection may be ``clean``-ed: objects within ΔR < dr of the leading object of another
selection are dropped (e.g. gen jets that are the muon itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import awkward as ak
import numpy as np
import vector
from typing_extensions import override

from flashsim.errors import InputError, UnitError
from flashsim.events import flat
from flashsim.expressions import parse, select
from flashsim.kinematics import delta_phi, pairs_by_distance
from flashsim.registry import Registry, suggest

vector.register_awkward()

__all__ = ["Feature", "FEATURES", "feature", "compute", "collections_used", "feature_names", "KINEMATIC_FIELDS"]

KINEMATIC_FIELDS = ("px", "py", "pz", "energy", "p", "mt")
_FAR = 10.0  # ΔR given when there is no k-th nearest object
_REQUIRED: Any = object()
_CLEAN_KEYS = {"collection": _REQUIRED, "selection": None, "dr": 0.4}
_TO_KEYS = {"collection": _REQUIRED, "selection": None, "clean": None}


def _check_table(table: Any, keys: Mapping[str, Any], where: str) -> None:
    """Unknown keys (with the closest valid one) and missing required keys of a feature table."""
    if not isinstance(table, Mapping):
        raise UnitError(f"{where}: expected a table, got {table!r}")
    for key in table:
        if key not in keys:
            raise UnitError(f"{where}: unknown key {key!r}{suggest(key, keys)} (valid: {sorted(keys)})")
    missing = [k for k, v in keys.items() if v is _REQUIRED and k not in table]
    if missing:
        raise UnitError(f"{where}: missing key(s) {missing}")
    for key in ("selection",):
        if table.get(key) is not None:
            parse(table[key], f"{where}.{key}")


def _momentum(objects: ak.Array) -> ak.Array:
    return ak.zip({"pt": objects.pt, "eta": objects.eta, "phi": objects.phi, "mass": objects.mass}, with_name="Momentum4D")


def _collection(events: ak.Array, name: str, selection: str | None, where: str,
                clean: Mapping[str, Any] | None = None) -> ak.Array:
    """Objects of a collection passing ``selection``, with ``_index`` (position in the full collection).

    ``clean = {collection, selection, dr}`` drops objects within ΔR < dr of the leading object of
    that other selection (objects are kept in events where it has none).
    """
    if name not in events.fields:
        raise InputError(f"{where}: collection {name!r} not in the events (have {sorted(events.fields)})")
    objects = events[name]
    if objects.ndim > 1 and "_index" not in objects.fields:
        objects = ak.with_field(objects, ak.local_index(objects, axis=1), "_index")
    if selection:
        objects = objects[select(selection, objects, where)]
    if clean:
        lead = _leading(_collection(events, clean["collection"], clean.get("selection"), where))
        far = ak.zip({"eta": ak.fill_none(lead.eta, 1e6), "phi": ak.fill_none(lead.phi, 0.0)})  # no leading object: keep all
        objects = objects[_delta_r(objects, far) >= float(clean.get("dr", 0.4))]  # broadcast: one leading object per event
    return objects


def _leading(objects: ak.Array, sort_by: str = "pt") -> ak.Array:
    """The leading object (largest ``sort_by``) of each event, None where there is none."""
    order = ak.argsort(objects[sort_by], axis=1, ascending=False, stable=True)
    return ak.firsts(objects[order], axis=1)


def _delta_r(a: ak.Array, b: ak.Array) -> ak.Array:
    return np.sqrt((a.eta - b.eta) ** 2 + delta_phi(a.phi, b.phi) ** 2)


def _field(objects: ak.Array, name: str, where: str) -> ak.Array:
    if name in objects.fields:
        return objects[name]
    if name in KINEMATIC_FIELDS:
        needed = ("pt", "phi") if name in ("px", "py") else ("pt", "eta", "phi") + (("mass",) if name in ("energy", "mt") else ())
        missing = [f for f in needed if f not in objects.fields]
        if missing:
            raise InputError(f"{where}: {name!r} needs fields {missing}")
        if name == "px":
            return objects.pt * np.cos(objects.phi)
        if name == "py":
            return objects.pt * np.sin(objects.phi)
        if name == "pz":
            return objects.pt * np.sinh(objects.eta)
        if name == "p":
            return objects.pt * np.cosh(objects.eta)
        return getattr(_momentum(objects), name)
    raise InputError(f"{where}: field {name!r} not in collection (has {objects.fields})")


def _event_field(events: ak.Array, dotted: str, where: str) -> ak.Array:
    coll, _, field = dotted.partition(".")
    if coll not in events.fields:
        raise InputError(f"{where}: event column {dotted!r} not in the events (have {sorted(events.fields)})")
    return events[coll] if not field else _field(events[coll], field, where)




# ---- feature kinds ---------------------------------------------------------------------------

FEATURES: Registry[type[Feature]] = Registry("feature kind")


class Feature:
    """One conditioning feature declared as a table in a unit file: its options (``keys``, with
    defaults; ``_REQUIRED`` if mandatory), the columns it names and how it computes them."""

    type: ClassVar[str] = ""
    keys: ClassVar[dict[str, Any]] = {}
    per_object: ClassVar[bool] = False  # needs the unit's rows (a source collection)
    named: ClassVar[bool] = True  # takes a ``name`` for its column(s)

    def __init__(self, spec: Mapping[str, Any], where: str) -> None:
        common = {"feature": None, "steps": None} | ({"name": None} if self.named else {})
        _check_table(spec, {**common, **self.keys}, where)
        self.spec = dict(spec)
        self.where = where
        for name in ("clean",):
            if spec.get(name) is not None:
                _check_table(spec[name], _CLEAN_KEYS, f"{where}.{name}")

    def get(self, key: str) -> Any:
        """An option's value, or its default."""
        value = self.spec.get(key, self.keys.get(key))
        return None if value is _REQUIRED else value

    @property
    def prefix(self) -> str:
        return self.spec.get("name") or f"{self.type}_{self.spec.get('collection', '')}"

    def names(self) -> list[str]:
        """Column names it produces."""
        return [f"{self.prefix}_{f}" for f in self.get("fields")]

    def collections(self) -> set[str]:
        """Collections it reads besides the unit's source (for the chain's ordering)."""
        used = {self.spec["collection"]} if "collection" in self.spec else set()
        for nested in (self.spec.get("clean"), self.spec.get("to"), (self.spec.get("to") or {}).get("clean")):
            if isinstance(nested, Mapping) and "collection" in nested:
                used.add(nested["collection"])
        return used

    def compute(self, events: ak.Array, rows: ak.Array | None, where: str) -> dict[str, ak.Array]:
        """Columns jagged like ``rows`` (selected source objects), or one per event if ``rows`` is None."""
        if self.per_object and rows is None:
            raise UnitError(f"{where}: feature {self.type!r} needs a source collection; use {{event = ...}} in event units")
        out = self._compute(events, rows, where)
        if rows is not None and not self.per_object:
            out = {n: ak.broadcast_arrays(v, rows[rows.fields[0]])[0] for n, v in out.items()}
        return out

    def _compute(self, events: ak.Array, rows: ak.Array | None, where: str) -> dict[str, ak.Array]:
        raise NotImplementedError

    def _others(self, events: ak.Array, where: str) -> ak.Array:
        return _collection(events, self.spec["collection"], self.spec.get("selection"), where, self.spec.get("clean"))


_SELECTED = {"collection": _REQUIRED, "selection": None, "clean": None}


@FEATURES.register
class Field(Feature):
    """``{field = "pt"}``: a field of the unit's source object (``abs = true`` for |eta|)."""

    type = "field"
    keys = {"field": _REQUIRED, "abs": False}
    per_object = True

    def names(self) -> list[str]:
        return [self.spec.get("name") or self.spec["field"]]

    def collections(self) -> set[str]:
        return set()

    @override
    def _compute(self, events, rows, where):
        values = _field(rows, self.spec["field"], where)
        return {self.names()[0]: abs(values) if self.get("abs") else values}


@FEATURES.register
class Event(Feature):
    """``{event = "Pileup.nTrueInt"}``: a per-event column."""

    type = "event"
    keys = {"event": _REQUIRED}

    def names(self) -> list[str]:
        return [self.spec.get("name") or self.spec["event"]]

    def collections(self) -> set[str]:
        return {self.spec["event"].partition(".")[0]}

    @override
    def _compute(self, events, rows, where):
        return {self.names()[0]: _event_field(events, self.spec["event"], where)}


@FEATURES.register
class Bits(Feature):
    """Bits of a flag word of the source object, one 0/1 column each."""

    type = "bits"
    keys = {"field": _REQUIRED, "bits": _REQUIRED}
    per_object = True
    named = False

    def names(self) -> list[str]:
        return [f"{self.spec['field']}_bit{b}" for b in self.spec["bits"]]

    def collections(self) -> set[str]:
        return set()

    @override
    def _compute(self, events, rows, where):
        flags = _field(rows, self.spec["field"], where)
        return {n: (flags >> int(b)) & 1 for n, b in zip(self.names(), self.spec["bits"])}


@FEATURES.register
class OneHot(Feature):
    """One 0/1 column per listed value of a discrete field (``abs = true`` compares |field|)."""

    type = "one_hot"
    keys = {"field": _REQUIRED, "values": _REQUIRED, "abs": False}
    per_object = True
    named = False

    def __init__(self, spec: Mapping[str, Any], where: str) -> None:
        super().__init__(spec, where)
        values = spec["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise UnitError(f"{where}: feature 'one_hot' needs a non-empty list 'values', got {values!r}")

    def names(self) -> list[str]:
        return [f"{self.spec['field']}_is{v}" for v in self.spec["values"]]

    def collections(self) -> set[str]:
        return set()

    @override
    def _compute(self, events, rows, where):
        x = _field(rows, self.spec["field"], where)
        if self.get("abs"):
            x = abs(x)
        return {n: ak.values_astype(x == v, np.int8) for n, v in zip(self.names(), self.spec["values"])}


@FEATURES.register
class Nearest(Feature):
    """The k nearest objects of a collection in ΔR: their ΔR and fields (``exclude_self`` when the
    collection is the unit's own source: the nearest *other* jet)."""

    type = "nearest"
    keys = {**_SELECTED, "k": 1, "fields": ["dr", "pt"], "exclude_self": False}
    per_object = True

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}_{f}" for i in range(1, int(self.get("k")) + 1) for f in self.get("fields")]

    def _compute(self, events, rows, where):
        return _nearest(rows, self._others(events, where), int(self.get("k")), self.get("fields"), self.names(), where,
                        bool(self.get("exclude_self")))


@FEATURES.register
class Count(Feature):
    """The number of selected objects of a collection per event."""

    type = "count"
    keys = dict(_SELECTED)

    def names(self) -> list[str]:
        return [self.prefix]

    @override
    def _compute(self, events, rows, where):
        return {self.prefix: ak.num(self._others(events, where), axis=1)}


@FEATURES.register
class Sum(Feature):
    """Sums of fields over the selected objects of a collection per event."""

    type = "sum"
    keys = {**_SELECTED, "fields": ["px", "py"]}

    @override
    def _compute(self, events, rows, where):
        others = self._others(events, where)
        return {n: ak.sum(_field(others, f, where), axis=1) for n, f in zip(self.names(), self.get("fields"))}


@FEATURES.register
class RecoMinusGen(Feature):
    """Σ reco − Σ matched gen of fields over a reco collection (the mismeasurement a MET unit sees)."""

    type = "reco_minus_gen"
    keys = {**_SELECTED, "gen_collection": _REQUIRED, "index": "genJetIdx", "fields": ["px", "py"]}

    def collections(self) -> set[str]:
        return super().collections() | {self.spec["gen_collection"]}

    @override
    def _compute(self, events, rows, where):
        others = self._others(events, where)
        gen = _collection(events, self.spec["gen_collection"], None, where)
        index = self.get("index")
        matched = others[(others[index] >= 0) & (others[index] < ak.num(gen, axis=1))]
        partner = gen[matched[index]]
        return {n: ak.sum(_field(matched, f, where), axis=1) - ak.sum(_field(partner, f, where), axis=1)
                for n, f in zip(self.names(), self.get("fields"))}


@FEATURES.register
class Leading(Feature):
    """Fields of the leading selected object per event; with ``reco``/``index``, of the first reco
    object (reco collections are pt-ordered) whose ``index`` points to it. ``fill`` where none (NaN)."""

    type = "leading"
    keys = {**_SELECTED, "fields": ["px", "py"], "sort_by": "pt", "fill": float("nan"), "reco": None,
            "reco_selection": None, "index": None}

    def collections(self) -> set[str]:
        return super().collections() | ({self.spec["reco"]} if self.spec.get("reco") else set())

    @override
    def _compute(self, events, rows, where):
        return _leading_values(self, events, self._others(events, where), where)


@FEATURES.register
class DeltaR(Feature):
    """ΔR between the leading objects of two selections (``to = {collection, selection, clean}``)."""

    type = "delta_r"
    keys = {**_SELECTED, "to": _REQUIRED}

    def __init__(self, spec: Mapping[str, Any], where: str) -> None:
        super().__init__(spec, where)
        _check_table(spec["to"], _TO_KEYS, f"{where}.to")
        if spec["to"].get("clean") is not None:
            _check_table(spec["to"]["clean"], _CLEAN_KEYS, f"{where}.to.clean")

    def names(self) -> list[str]:
        return [self.prefix]

    @override
    def _compute(self, events, rows, where):
        to = self.spec["to"]
        other = _leading(_collection(events, to["collection"], to.get("selection"), where, to.get("clean")))
        return {self.prefix: ak.fill_none(_delta_r(_leading(self._others(events, where)), other), _FAR)}


def feature(spec: Mapping[str, Any], where: str = "feature") -> Feature:
    """The feature a table declares (``feature = kind``, or ``field``/``event`` alone), its options checked."""
    if not isinstance(spec, Mapping):
        raise UnitError(f"{where}: expected a table, got {spec!r}")
    kind = spec.get("feature") or ("field" if "field" in spec else "event" if "event" in spec else None)
    if kind is None:
        raise UnitError(f"{where}: a feature table needs 'field', 'event' or feature = one of {FEATURES.names()}, got {dict(spec)}")
    return FEATURES.get(kind, where)(spec, where)


def feature_names(spec: Mapping[str, Any], where: str = "feature") -> list[str]:
    """Column names a feature table produces."""
    return feature(spec, where).names()


def collections_used(spec: Mapping[str, Any]) -> set[str]:
    """Collections a feature table reads besides the unit's source (for the chain's ordering)."""
    return feature(spec).collections()


def compute(spec: Mapping[str, Any], events: ak.Array, rows: ak.Array | None, where: str) -> dict[str, ak.Array]:
    """Columns of one feature: jagged like ``rows`` (selected source objects) or one per event if ``rows`` is None."""
    return feature(spec, where).compute(events, rows, where)


def _leading_values(feat: Leading, events: ak.Array, objects: ak.Array, where: str) -> dict[str, ak.Array]:
    """Fields of the leading object (or of the reco object matched to it), ``fill`` where there is none."""
    spec = feat.spec
    lead = _leading(objects, feat.get("sort_by"))
    fill = float(feat.get("fill"))
    if spec.get("reco"):
        reco = _collection(events, spec["reco"], spec.get("reco_selection"), where)
        index = spec.get("index")
        if not index or index not in reco.fields:
            raise InputError(f"{where}: feature 'leading' with reco = {spec['reco']!r} needs index = <cross-reference field of {spec['reco']}>")
        target = ak.fill_none(lead["_index"], -1)
        lead = ak.firsts(reco[reco[index] == target], axis=1)
    out = {}
    for name, f in zip(feat.names(), feat.get("fields")):
        values = lead["_index"] if f == "index" else _field(lead, f, where)
        out[name] = ak.fill_none(values, -1 if f == "index" else fill)
    return out


def _take(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` where ``index >= 0``, 0 elsewhere (also when there are no values)."""
    out = np.zeros(len(index), np.float64)
    out[index >= 0] = values[index[index >= 0]]
    return out


def _nearest(rows: ak.Array | None, others: ak.Array, k: int, fields: list[str], names: list[str], where: str,
             exclude_self: bool = False) -> dict[str, ak.Array]:
    """The k nearest ``others`` in ΔR; ``exclude_self`` skips ΔR = 0, the row itself when ``others``
    is the unit's own source collection (a jet's nearest neighbouring jet)."""
    if rows is None:
        raise UnitError(f"{where}: feature 'nearest' needs a source collection")
    counts = ak.to_numpy(ak.num(rows, axis=1))
    pairs = pairs_by_distance(rows, others, exclude_self)
    values_of = {f: flat(_field(others, f, where)) for f in fields if f != "dr"}
    out: dict[str, ak.Array] = {}
    names_iter = iter(names)
    for i in range(k):
        chosen, dr = pairs.nearest(i)
        for f in fields:
            values = np.where(chosen >= 0, dr, _FAR) if f == "dr" else _take(values_of[f], chosen)
            out[next(names_iter)] = ak.unflatten(values, counts)
    return out
