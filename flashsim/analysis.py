"""Analysis specs (``flashsim/analyses/<name>.toml`` or a path): a declarative event selection, parsed
into a strict typed model and evaluated on awkward events into a cut flow, event weights and observables.

::

    name = "wjets_munu"
    [objects.goodmu]                      # a NanoAOD collection and a cut on its fields
    collection = "Muon"
    cut = "(pt > 25) & (abs(eta) < 2.4) & tightId & (pfRelIso04_all < 0.15)"
    [objects.goodjet]                     # objects within dr of any goodmu are dropped
    collection = "Jet"
    cut = "(pt > 30) & (abs(eta) < 2.4)"
    clean = { against = "goodmu", dr = 0.4 }
    [[cuts]]                              # event cuts, applied in order
    name = "one muon"
    cut = "n_goodmu == 1"
    [[observables]]                       # histogrammed after the last cut
    name = "mt"
    expression = "mt(goodmu, MET)"
    bins = [30, 0, 150]                   # n, low, high (or edges = [...])
    label = "m_T(mu, MET) [GeV]"

Event expressions read the objects (``goodmu``, ``goodmu.pt``), their counts (``n_goodmu``), event
columns by NanoAOD name (``MET_pt``, ``genWeight``) or singleton collections (``MET``), and call the
functions of :data:`EVENT_EXPRESSIONS`. Unknown keys are errors naming the file, the table path and the
closest valid key; names a sample lacks are errors naming the spec, the expression and the closest name.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import vector
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flashsim.errors import ConfigError, FlashsimError, InputError
from flashsim.events import collection_of
from flashsim.expressions import UNIT_CUTS, Cut, Language
from flashsim.kinematics import delta_phi
from flashsim.locations import resolve_analysis
from flashsim.registry import suggest
from flashsim.spec import describe_errors

__all__ = ["AnalysisSpec", "EVENT_EXPRESSIONS", "Selection", "load_analysis", "run_analysis"]

vector.register_awkward()
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# ---- the functions of event expressions ------------------------------------------------------------


def _lists(values: Any, fn: str) -> ak.Array:
    if not (isinstance(values, ak.Array) and values.ndim == 2 and not values.fields):
        raise InputError(f"{fn}() takes numbers of objects, one list per event (e.g. goodjet.pt)")
    return values


def _nth(values: ak.Array, k: int, fn: str) -> ak.Array:
    """The k-th entry of each event's list (objects keep NanoAOD's pt order), NaN where there is none."""
    return ak.fill_none(ak.pad_none(_lists(values, fn), k + 1, axis=1)[:, k], np.nan)


def _one(objects: ak.Array, k: int, fn: str) -> ak.Array:
    """The k-th object of each event (None where there is none), or the record of a singleton collection."""
    if not objects.fields:
        raise InputError(f"{fn}() takes objects (e.g. goodmu) or a singleton collection (MET), not numbers")
    if objects.ndim == 1:
        if k:
            raise InputError(f"{fn}() of one singleton collection: give two objects, e.g. {fn}(goodmu, MET)")
        return objects
    return ak.pad_none(objects, k + 1, axis=1)[:, k]


def _pair(a: ak.Array, b: ak.Array | None, fn: str) -> tuple[ak.Array, ak.Array]:
    """The two leading objects of ``a``, or the leading ones of ``a`` and ``b``."""
    return (_one(a, 0, fn), _one(a, 1, fn)) if b is None else (_one(a, 0, fn), _one(b, 0, fn))


def _get(obj: ak.Array, name: str, fn: str) -> ak.Array:
    if name not in obj.fields:
        raise InputError(f"{fn}() needs the field {name!r}, which these objects lack (fields: {obj.fields})")
    return ak.fill_none(obj[name], np.nan)


def _p4(obj: ak.Array, fn: str) -> ak.Array:
    """Four-momenta (vector's Momentum4D); massless where the objects carry no mass."""
    pt = _get(obj, "pt", fn)
    mass = _get(obj, "mass", fn) if "mass" in obj.fields else 0.0 * pt
    return ak.zip({"pt": pt, "eta": _get(obj, "eta", fn), "phi": _get(obj, "phi", fn), "mass": mass}, with_name="Momentum4D")


def _mass(a: ak.Array, b: ak.Array | None = None) -> ak.Array:
    """Invariant mass of the two leading objects of ``a`` (or of the leading ``a`` and ``b``)."""
    x, y = _pair(a, b, "mass")
    return (_p4(x, "mass") + _p4(y, "mass")).mass


def _pair_pt(a: ak.Array, b: ak.Array | None = None) -> ak.Array:
    """pt of the system of the two leading objects of ``a`` (or of the leading ``a`` and ``b``)."""
    x, y = _pair(a, b, "pair_pt")
    return (_p4(x, "pair_pt") + _p4(y, "pair_pt")).pt


def _deta(a: ak.Array, b: ak.Array | None = None) -> ak.Array:
    """|Δη| of the two leading objects of ``a`` (or of the leading ``a`` and ``b``)."""
    x, y = _pair(a, b, "deta")
    return abs(_get(x, "eta", "deta") - _get(y, "eta", "deta"))


def _dphi(a: ak.Array, b: ak.Array | None = None) -> ak.Array:
    """|Δφ| of the two leading objects of ``a`` (or of the leading ``a`` and ``b``, e.g. a muon and MET)."""
    x, y = _pair(a, b, "dphi")
    return abs(delta_phi(_get(x, "phi", "dphi"), _get(y, "phi", "dphi")))


def _dr(a: ak.Array, b: ak.Array | None = None) -> ak.Array:
    """ΔR of the two leading objects of ``a`` (or of the leading ``a`` and ``b``)."""
    x, y = _pair(a, b, "dr")
    return _p4(x, "dr").deltaR(_p4(y, "dr"))


def _mt(a: ak.Array, b: ak.Array) -> ak.Array:
    """Transverse mass of the leading ``a`` and the leading ``b`` (MET): sqrt(2 pt_a pt_b (1 - cos Δφ))."""
    x, y = _one(a, 0, "mt"), _one(b, 0, "mt")
    pa, pb = _get(x, "pt", "mt"), _get(y, "pt", "mt")
    return np.sqrt(2 * pa * pb * (1 - np.cos(_get(x, "phi", "mt") - _get(y, "phi", "mt"))))


#: the language of event cuts and observables: the unit-file cuts' functions, name.field, and kinematics
EVENT_EXPRESSIONS = Language({
    **UNIT_CUTS.functions,
    "leading": lambda values: _nth(values, 0, "leading"),
    "subleading": lambda values: _nth(values, 1, "subleading"),
    "sum": lambda values: ak.sum(_lists(values, "sum"), axis=1),
    "mass": _mass, "pair_pt": _pair_pt, "deta": _deta, "dphi": _dphi, "dr": _dr, "mt": _mt,
}, attributes=True)


# ---- the spec ------------------------------------------------------------------------------------


class _Table(BaseModel):
    """A table of an analysis spec: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Clean(_Table):
    """Drop objects within ΔR < ``dr`` of any object of ``against`` (an object defined before)."""

    against: str
    dr: float = Field(default=0.4, gt=0)


class ObjectSpec(_Table):
    """Objects of a NanoAOD collection (or of an object defined before) passing a cut on its fields."""

    collection: str = Field(min_length=1)
    cut: str | None = None
    clean: Clean | None = None

    @field_validator("cut")
    @classmethod
    def _cut(cls, value: str | None) -> str | None:
        return value if value is None else UNIT_CUTS.parse(value, "").expression


class CutSpec(_Table):
    """One event cut of the cut flow."""

    name: str = Field(min_length=1)
    cut: str

    @field_validator("cut")
    @classmethod
    def _cut(cls, value: str) -> str:
        return EVENT_EXPRESSIONS.parse(value, "").expression


class Observable(_Table):
    """A histogrammed quantity of the selected events: ``bins = [n, low, high]`` or ``edges``."""

    name: str
    expression: str
    bins: list[float] | None = None
    edges: list[float] | None = None
    label: str = ""
    logy: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: use letters, digits and _ (it names the plot file)")
        return value

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        return EVENT_EXPRESSIONS.parse(value, "").expression

    @model_validator(mode="after")
    def _binning(self) -> Observable:
        if (self.bins is None) == (self.edges is None):
            raise ValueError("give either bins = [n, low, high] or edges = [...]")
        if self.bins is not None and not (len(self.bins) == 3 and self.bins[0] >= 1 and self.bins[0] == int(self.bins[0])
                                          and self.bins[2] > self.bins[1]):
            raise ValueError(f"bins = {self.bins}: want [n, low, high] with an integer n >= 1 and high > low")
        if self.edges is not None and not (len(self.edges) >= 2 and np.all(np.diff(self.edges) > 0)):
            raise ValueError(f"edges = {self.edges}: want at least two increasing values")
        return self

    @property
    def bin_edges(self) -> np.ndarray:
        if self.edges is not None:
            return np.asarray(self.edges, np.float64)
        n, lo, hi = self.bins or (1, 0, 1)
        return np.linspace(lo, hi, int(n) + 1)


class AnalysisSpec(_Table):
    """An analysis selection: objects, ordered event cuts, observables and the event weights."""

    name: str = Field(min_length=1)
    description: str = ""
    reference: str = ""  # where the selection comes from
    weights: list[str] = ["genWeight", "FlashSim_weight"]  # multiplied where a sample has them
    objects: dict[str, ObjectSpec] = {}
    cuts: list[CutSpec] = []
    observables: list[Observable] = []
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSpec:
        for i, (name, obj) in enumerate(self.objects.items()):
            if not _NAME.match(name) or name.startswith("n_") or name in EVENT_EXPRESSIONS.functions:
                raise ValueError(f"objects.{name}: an object name is letters, digits and _, not n_* nor a function name")
            if obj.collection in self.objects and obj.collection not in list(self.objects)[:i]:
                raise ValueError(f"objects.{name}.collection: the object {obj.collection!r} must be defined before {name!r}")
            if obj.clean is not None and obj.clean.against not in list(self.objects)[:i]:
                raise ValueError(f"objects.{name}.clean.against: {obj.clean.against!r} is not an object defined before "
                                 f"{name!r}{suggest(obj.clean.against, list(self.objects)[:i])}")
        for table, names in (("cuts", [c.name for c in self.cuts]), ("observables", [o.name for o in self.observables])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{table}: names {twice} are used more than once")
        return self

    @property
    def source(self) -> str:
        """How the spec is named in messages: its file, or its name."""
        return str(self.path) if self.path else f"analysis {self.name!r}"

    def expressions(self) -> list[tuple[str, Cut]]:
        """Every event expression with its table path (cuts, then observables)."""
        out = [(f"cuts[{i}] ({c.name})", EVENT_EXPRESSIONS.parse(c.cut)) for i, c in enumerate(self.cuts)]
        return out + [(f"observables[{i}] ({o.name})", EVENT_EXPRESSIONS.parse(o.expression)) for i, o in enumerate(self.observables)]

    def collections(self) -> list[str]:
        """The collections and event branches the spec reads (weights included; a sample may lack those)."""
        names = [o.collection for o in self.objects.values() if o.collection not in self.objects]
        own = set(self.objects) | {f"n_{o}" for o in self.objects}
        names += [collection_of(n) for _, cut in self.expressions() for n in sorted(cut.names) if n not in own]
        return list(dict.fromkeys(names + [collection_of(w) for w in self.weights]))


    def check_collections(self, available: set[str], label: str) -> None:
        """Every object's NanoAOD collection is among ``available`` (those of a file), else an error naming it."""
        for name, obj in self.objects.items():
            if obj.collection not in self.objects and obj.collection not in available:
                raise InputError(f"{self.source}: objects.{name}.collection: {obj.collection!r} is not in the {label} "
                                 f"(has {sorted(available)}){suggest(obj.collection, available)}")


def load_analysis(path_or_name: str | os.PathLike[str]) -> AnalysisSpec:
    """Read an analysis spec from a path, or a packaged one by name (``wjets_munu``)."""
    path = resolve_analysis(path_or_name)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"analysis spec {path}: {exc}") from exc
    try:
        return AnalysisSpec.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise ConfigError(f"analysis spec {path}: {describe_errors(exc, AnalysisSpec)}") from None


# ---- evaluation ----------------------------------------------------------------------------------


@dataclass
class Selection:
    """One sample through an analysis: event weights, the events left after each cut (the first entry:
    all events) and, per observable, the values and weights of the selected events."""

    n_events: int
    weights: np.ndarray
    weight_columns: list[str]
    passed: list[np.ndarray]
    observables: dict[str, tuple[np.ndarray, np.ndarray]]
    undefined: dict[str, int]  # per observable: selected events where it is undefined (NaN), not filled


def _namespace(events: ak.Array) -> dict[str, Any]:
    """Event columns by name: top-level fields, and ``X_field`` of every singleton collection ``X``."""
    ns: dict[str, Any] = {}
    for name in events.fields:
        column = events[name]
        ns[name] = column
        if column.fields and column.ndim == 1:
            ns.update({f"{name}_{f}": column[f] for f in column.fields})
    return ns


def _objects(spec: AnalysisSpec, events: ak.Array, ns: dict[str, Any], label: str) -> None:
    """Select every object of the spec into ``ns`` (with its count ``n_<name>``), in the spec's order."""
    for name, obj in spec.objects.items():
        where = f"{spec.source}: objects.{name}"
        if name in ns or f"n_{name}" in ns:
            raise ConfigError(f"{where}: the name is also a column of the {label}; rename the object")
        if obj.collection in spec.objects:  # an object defined before
            coll = ns[obj.collection]
        else:
            coll = events[obj.collection] if obj.collection in events.fields else None
        if coll is None or not coll.fields or coll.ndim != 2:
            have = [f for f in events.fields if events[f].fields and events[f].ndim == 2]
            raise InputError(f"{where}.collection: {obj.collection!r} is not a collection of the {label} "
                             f"(has {have}){suggest(obj.collection, have)}")
        if obj.cut is not None:
            cut = UNIT_CUTS.parse(obj.cut)
            for field in sorted(cut.names - set(coll.fields)):
                raise InputError(f"{where}.cut: {obj.collection} of the {label} has no field {field!r} "
                                 f"(cut {obj.cut!r}){suggest(field, coll.fields)}")
            coll = coll[cut(coll, f"{where}.cut")]
        if obj.clean is not None:
            other = ns[obj.clean.against]
            pairs = ak.cartesian({"a": coll, "b": other}, axis=1, nested=True)
            dr = np.hypot(pairs.a.eta - pairs.b.eta, delta_phi(pairs.a.phi, pairs.b.phi))
            coll = coll[ak.all(dr >= obj.clean.dr, axis=2)]
        ns[name] = coll
        ns[f"n_{name}"] = ak.to_numpy(ak.num(coll, axis=1))


def _check_names(spec: AnalysisSpec, ns: Mapping[str, Any], label: str) -> None:
    """Every name and name.field of every event expression is known, else an error with the closest name."""
    for where, cut in spec.expressions():
        for name in sorted(cut.names):
            if name not in ns:
                raise InputError(f"{spec.source}: {where}: {name!r} is neither an object, an object count n_<object>, "
                                 f"nor a column of the {label}{suggest(name, list(ns))}")
        for name, field in sorted(cut.attributes):
            fields = getattr(ns.get(name), "fields", None) or []
            if field not in fields:
                raise InputError(f"{spec.source}: {where}: {name}.{field}: {name} in the {label} has no field "
                                 f"{field!r} (fields: {fields}){suggest(field, fields)}")


def _evaluate(cut: Cut, ns: Mapping[str, Any], where: str) -> Any:
    """The expression's values; its errors (awkward's too: lists that do not line up) name ``where``."""
    try:
        values = cut(ns, where)
    except FlashsimError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise InputError(f"{where}: cannot evaluate {cut.expression!r}: {str(exc).strip().splitlines()[0]}") from None
    if isinstance(values, ak.Array) and values.fields:
        raise InputError(f"{where}: {cut.expression!r} gives objects, not numbers; read a field, e.g. goodmu.pt")
    return values


def _event_values(values: Any, n: int, where: str) -> np.ndarray:
    """One float per event (a number broadcasts); a list per event is an error naming ``where``."""
    if not isinstance(values, ak.Array):
        return np.full(n, values, np.float64)
    if values.ndim != 1:
        raise InputError(f"{where}: gives a list per event; reduce it, e.g. leading(...), sum(...) or n_<object>")
    return np.asarray(ak.to_numpy(ak.fill_none(values, np.nan)), np.float64)


def run_analysis(spec: AnalysisSpec, events: ak.Array, label: str = "sample") -> Selection:
    """Apply the spec to events: weights, the cut flow's masks and the selected events' observables."""
    n = len(events)
    ns = _namespace(events)
    _objects(spec, events, ns, label)
    _check_names(spec, ns, label)
    used = [w for w in spec.weights if w in ns]
    weights = np.ones(n)
    for w in used:
        weights = weights * _event_values(ns[w], n, f"{spec.source}: weights: {w}")
    mask = np.ones(n, bool)
    passed = [mask]
    for (where, cut), c in zip(spec.expressions(), spec.cuts):
        values = _event_values(_evaluate(cut, ns, f"{spec.source}: {where}"), n, f"{spec.source}: {where} {c.cut!r}")
        mask = mask & (values != 0) & ~np.isnan(values)  # NaN (an object missing) fails the cut
        passed.append(mask)
    observables, undefined = {}, {}
    for (where, cut), obs in zip(spec.expressions()[len(spec.cuts):], spec.observables):
        values = _evaluate(cut, ns, f"{spec.source}: {where}")
        if isinstance(values, ak.Array) and values.ndim == 2:  # one entry per object, each with its event's weight
            sel = values[mask]
            vals = np.asarray(ak.to_numpy(ak.flatten(sel)), np.float64)
            wts = np.repeat(weights[mask], ak.to_numpy(ak.num(sel, axis=1)))
        else:
            vals, wts = _event_values(values, n, f"{spec.source}: {where}")[mask], weights[mask]
        ok = np.isfinite(vals)
        observables[obs.name] = (vals[ok], wts[ok])
        undefined[obs.name] = int((~ok).sum())
    return Selection(n, weights, used, passed, observables, undefined)
