"""Conditioning features by name: object fields, four-vector components, event fields, and
derived quantities (ΔR to the nearest objects, counts, sums, reco-minus-gen momentum, flag bits,
one-hot classes such as the jet flavour).

A feature is declared in a unit's TOML as a table, e.g. ``{field = "pt"}`` (``abs = true`` for
``|eta|``, ``name`` to use a field twice with different steps),
``{event = "Pileup.nTrueInt"}`` or ``{feature = "nearest", collection = "GenPart",
selection = "abs(pdgId) == 13 & status == 1", k = 2}`` (``exclude_self = true`` when the
collection is the unit's own source: the nearest *other* jet); :func:`compute` turns it into named
columns aligned with the unit's rows (one per selected object, or one per event).

Per-event features of analysis-specific event units (Chen et al.): ``leading`` gives fields of
the leading object of a selected collection (or of the reco object matched to it, with
``reco``/``index``), ``delta_r`` the ΔR between the leading objects of two selections. Any
collection selection may be ``clean``-ed: objects within ΔR < dr of the leading object of another
selection are dropped (e.g. gen jets that are the muon itself).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import vector

from flashsim.errors import InputError, UnitError

vector.register_awkward()

__all__ = ["select", "compute", "collections_used", "feature_names", "KINEMATIC_FIELDS"]

KINEMATIC_FIELDS = ("px", "py", "pz", "energy", "p", "mt")
_FAR = 10.0  # ΔR given when there is no k-th nearest object


# ---- selections ------------------------------------------------------------------------------

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load, ast.Constant,
    ast.Call, ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.Invert, ast.Not, ast.USub, ast.Add, ast.Sub,
    ast.Mult, ast.Div, ast.Mod, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)
_FUNCTIONS = {"abs": abs, "sqrt": np.sqrt, "hypot": np.hypot}


def select(expression: str, objects: ak.Array, where: str = "selection") -> ak.Array:
    """Evaluate a cut such as ``abs(pdgId) == 13 & status == 1`` on a collection (no Python eval of arbitrary code)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise UnitError(f"{where}: cannot parse {expression!r}: {exc.msg}") from exc
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise UnitError(f"{where}: {type(node).__name__} is not allowed in {expression!r}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise UnitError(f"{where}: only {sorted(_FUNCTIONS)} may be called in {expression!r}")
    return _eval(tree.body, objects, expression, where)


def _eval(node: ast.AST, objects: ak.Array, expression: str, where: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            return _FUNCTIONS[node.id]
        if node.id not in objects.fields:
            raise InputError(f"{where}: field {node.id!r} of {expression!r} not in collection (has {objects.fields})")
        return objects[node.id]
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](*(_eval(a, objects, expression, where) for a in node.args))  # type: ignore[union-attr]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, objects, expression, where)
        return {ast.USub: lambda v: -v, ast.Invert: lambda v: ~v, ast.Not: lambda v: ~v}[type(node.op)](value)
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, objects, expression, where) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = (out & v) if isinstance(node.op, ast.And) else (out | v)
        return out
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, objects, expression, where), _eval(node.right, objects, expression, where)
        ops = {ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or, ast.Add: np.add, ast.Sub: np.subtract,
               ast.Mult: np.multiply, ast.Div: np.divide, ast.Mod: np.mod}
        return ops[type(node.op)](a, b)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, objects, expression, where)
        out = None
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, objects, expression, where)
            ops = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
                   ast.Gt: np.greater, ast.GtE: np.greater_equal}
            cmp = ops[type(op)](left, right)
            out = cmp if out is None else np.logical_and(out, cmp)
            left = right
        return out
    raise UnitError(f"{where}: unsupported expression {expression!r}")


# ---- features --------------------------------------------------------------------------------


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
        unknown = set(clean) - {"collection", "selection", "dr"}
        if unknown or "collection" not in clean:
            raise UnitError(f"{where}: clean needs {{collection, selection, dr}}, got {dict(clean)}")
        lead = _leading(_collection(events, clean["collection"], clean.get("selection"), where))
        far = ak.zip({"eta": ak.fill_none(lead.eta, 1e6), "phi": ak.fill_none(lead.phi, 0.0)})  # no leading object: keep all
        objects = objects[_delta_r(objects, far) >= float(clean.get("dr", 0.4))]  # broadcast: one leading object per event
    return objects


def _leading(objects: ak.Array, sort_by: str = "pt") -> ak.Array:
    """The leading object (largest ``sort_by``) of each event, None where there is none."""
    order = ak.argsort(objects[sort_by], axis=1, ascending=False, stable=True)
    return ak.firsts(objects[order], axis=1)


def _delta_r(a: ak.Array, b: ak.Array) -> ak.Array:
    deta = a.eta - b.eta
    dphi = (a.phi - b.phi + np.pi) % (2 * np.pi) - np.pi
    return np.sqrt(deta**2 + dphi**2)


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


def feature_names(spec: Mapping[str, Any]) -> list[str]:
    """Column names a feature table produces."""
    if "name" in spec and "fields" not in spec and spec.get("feature") not in ("nearest", "leading", "bits", "one_hot"):
        return [spec["name"]]
    kind = spec.get("feature")
    if kind is None and "field" in spec:
        return [spec["field"]]
    if kind is None and "event" in spec:
        return [spec["event"]]
    if kind == "bits":
        return [f"{spec['field']}_bit{b}" for b in spec["bits"]]
    if kind == "one_hot":
        return [f"{spec['field']}_is{v}" for v in spec["values"]]
    prefix = spec.get("name", f"{kind}_{spec.get('collection', '')}")
    if kind == "nearest":
        fields = spec.get("fields", ["dr", "pt"])
        return [f"{prefix}{i}_{f}" for i in range(1, int(spec.get("k", 1)) + 1) for f in fields]
    if kind in ("sum", "reco_minus_gen", "leading"):
        return [f"{prefix}_{f}" for f in spec.get("fields", ["px", "py"])]
    if kind == "delta_r":
        return [prefix]
    if kind == "count":
        return [prefix]
    raise UnitError(f"unknown feature spec {dict(spec)}: expected 'field', 'event' or feature = nearest|count|sum|reco_minus_gen|bits|one_hot|leading|delta_r")


def collections_used(spec: Mapping[str, Any]) -> set[str]:
    """Collections a feature table reads besides the unit's source (for the chain's ordering)."""
    used = set()
    if "event" in spec:
        used.add(spec["event"].partition(".")[0])
    if "collection" in spec:
        used.add(spec["collection"])
    if "gen_collection" in spec:
        used.add(spec["gen_collection"])
    if "reco" in spec:
        used.add(spec["reco"])
    for nested in (spec.get("clean"), spec.get("to"), (spec.get("to") or {}).get("clean")):
        if isinstance(nested, Mapping) and "collection" in nested:
            used.add(nested["collection"])
    return used


def compute(spec: Mapping[str, Any], events: ak.Array, rows: ak.Array | None, where: str) -> dict[str, ak.Array]:
    """Columns of one feature: jagged like ``rows`` (selected source objects) or one per event if ``rows`` is None."""
    names = feature_names(spec)
    kind = spec.get("feature")
    if kind is None and "field" in spec:
        if rows is None:
            raise UnitError(f"{where}: {{field = {spec['field']!r}}} needs a source collection; use {{event = ...}} in event units")
        values = _field(rows, spec["field"], where)
        return {names[0]: abs(values) if spec.get("abs", False) else values}
    if kind is None and "event" in spec:
        values = _event_field(events, spec["event"], where)
        return {names[0]: values if rows is None else ak.broadcast_arrays(values, rows[rows.fields[0]])[0]}
    if kind == "bits":
        if rows is None:
            raise UnitError(f"{where}: feature 'bits' needs a source collection")
        flags = _field(rows, spec["field"], where)
        return {n: (flags >> int(b)) & 1 for n, b in zip(names, spec["bits"])}
    if kind == "one_hot":
        return _one_hot(spec, rows, names, where)
    others = _collection(events, spec["collection"], spec.get("selection"), where, spec.get("clean"))
    if kind == "nearest":
        return _nearest(rows, others, int(spec.get("k", 1)), spec.get("fields", ["dr", "pt"]), names, where,
                        bool(spec.get("exclude_self", False)))
    if kind == "count":
        count = ak.num(others, axis=1)
        return {names[0]: count if rows is None else ak.broadcast_arrays(count, rows[rows.fields[0]])[0]}
    if kind == "sum":
        out = {n: ak.sum(_field(others, f, where), axis=1) for n, f in zip(names, spec.get("fields", ["px", "py"]))}
    elif kind == "leading":
        out = _leading_values(spec, events, others, names, where)
    elif kind == "delta_r":
        to = spec.get("to")
        if not isinstance(to, Mapping) or "collection" not in to:
            raise UnitError(f"{where}: feature 'delta_r' needs to = {{collection, selection, clean}}")
        other = _leading(_collection(events, to["collection"], to.get("selection"), where, to.get("clean")))
        out = {names[0]: ak.fill_none(_delta_r(_leading(others), other), _FAR)}
    elif kind == "reco_minus_gen":
        gen = _collection(events, spec["gen_collection"], None, where)
        index = others[spec.get("index", "genJetIdx")]
        matched = others[(index >= 0) & (index < ak.num(gen, axis=1))]
        midx = matched[spec.get("index", "genJetIdx")]
        partner = gen[midx]
        out = {
            n: ak.sum(_field(matched, f, where), axis=1) - ak.sum(_field(partner, f, where), axis=1)
            for n, f in zip(names, spec.get("fields", ["px", "py"]))
        }
    else:
        raise UnitError(f"{where}: unknown feature {kind!r}")
    if rows is not None:
        out = {n: ak.broadcast_arrays(v, rows[rows.fields[0]])[0] for n, v in out.items()}
    return out


def _one_hot(spec: Mapping[str, Any], rows: ak.Array | None, names: list[str], where: str) -> dict[str, ak.Array]:
    """One 0/1 column per listed value of a discrete field (``abs = true`` compares |field|)."""
    if rows is None:
        raise UnitError(f"{where}: feature 'one_hot' needs a source collection")
    values = spec.get("values")
    if not isinstance(values, (list, tuple)) or not values:
        raise UnitError(f"{where}: feature 'one_hot' needs a non-empty list 'values', got {values!r}")
    x = _field(rows, spec["field"], where)
    if spec.get("abs", False):
        x = abs(x)
    return {n: ak.values_astype(x == v, np.int8) for n, v in zip(names, values)}


def _leading_values(spec: Mapping[str, Any], events: ak.Array, objects: ak.Array, names: list[str], where: str) -> dict[str, ak.Array]:
    """Fields of the leading selected object per event; with ``reco``/``index``, of the first reco
    object (reco collections are pt-ordered) whose ``index`` points to it. ``fill`` where none (NaN)."""
    lead = _leading(objects, spec.get("sort_by", "pt"))
    fill = float(spec.get("fill", np.nan))
    if "reco" in spec:
        reco = _collection(events, spec["reco"], spec.get("reco_selection"), where)
        index = spec.get("index")
        if not index or index not in reco.fields:
            raise InputError(f"{where}: feature 'leading' with reco = {spec['reco']!r} needs index = <cross-reference field of {spec['reco']}>")
        target = ak.fill_none(lead["_index"], -1)
        lead = ak.firsts(reco[reco[index] == target], axis=1)
    out = {}
    for name, f in zip(names, spec.get("fields", ["px", "py"])):
        values = lead["_index"] if f == "index" else _field(lead, f, where)
        out[name] = ak.fill_none(values, -1 if f == "index" else fill)
    return out


def _nearest(rows: ak.Array | None, others: ak.Array, k: int, fields: list[str], names: list[str], where: str,
             exclude_self: bool = False) -> dict[str, ak.Array]:
    """The k nearest ``others`` in ΔR; ``exclude_self`` skips ΔR = 0, the row itself when ``others``
    is the unit's own source collection (a jet's nearest neighbouring jet)."""
    if rows is None:
        raise UnitError(f"{where}: feature 'nearest' needs a source collection")
    pairs = ak.cartesian({"a": rows, "b": others}, axis=1, nested=True)
    a = ak.zip({"eta": pairs.a.eta, "phi": pairs.a.phi, "pt": pairs.a.pt, "mass": pairs.a.mass}, with_name="Momentum4D")
    b = ak.zip({"eta": pairs.b.eta, "phi": pairs.b.phi, "pt": pairs.b.pt, "mass": pairs.b.mass}, with_name="Momentum4D")
    dr = a.deltaR(b)
    if exclude_self:
        keep = dr > 0
        dr, pairs = dr[keep], pairs[keep]
    order = ak.argsort(dr, axis=2)
    dr_sorted = dr[order]
    other_sorted = pairs.b[order]
    out: dict[str, ak.Array] = {}
    names_iter = iter(names)
    for i in range(k):
        for f in fields:
            name = next(names_iter)
            if f == "dr":
                values = ak.fill_none(ak.pad_none(dr_sorted, k, axis=2)[:, :, i], _FAR)
            else:
                values = ak.fill_none(ak.pad_none(_field(other_sorted, f, where), k, axis=2)[:, :, i], 0.0)
            out[name] = values
    return out
