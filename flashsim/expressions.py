"""The cut language of unit files and analysis specs (``(abs(pdgId) == 13) & (status == 1)``): parsed
once into a :class:`Cut`, checked against a small whitelist of Python syntax, evaluated on awkward columns.

A :class:`Language` is the whitelist's variable part: the functions a cut may call and whether it may
read ``name.field``. Unit files use :data:`UNIT_CUTS`; analysis specs add their own kinematic functions.
``&`` and ``|`` bind tighter than comparisons in Python, so ``pt > 25 & abs(eta) < 2.4`` is refused
(it would read ``pt > (25 & abs(eta)) < 2.4``): write ``(pt > 25) & (abs(eta) < 2.4)`` or use ``and``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeAlias

import awkward as ak
import numpy as np

from flashsim.errors import InputError, UnitError
from flashsim.registry import suggest

__all__ = ["Cut", "Language", "UNIT_CUTS", "REFERENCE_CUTS", "parse", "select"]

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load, ast.Constant,
    ast.Call, ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.Invert, ast.Not, ast.USub, ast.Add, ast.Sub,
    ast.Mult, ast.Div, ast.Mod, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)
_UNARY = {ast.USub: lambda v: -v, ast.Invert: lambda v: ~v, ast.Not: lambda v: ~v}
_BINARY = {ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or, ast.Add: np.add, ast.Sub: np.subtract,
           ast.Mult: np.multiply, ast.Div: np.divide, ast.Mod: np.mod}
_COMPARE = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
            ast.Gt: np.greater, ast.GtE: np.greater_equal}

Namespace: TypeAlias = "ak.Array | Mapping[str, Any]"


class Cut:
    """A parsed, whitelisted cut expression; ``names`` are the columns it reads, ``attributes`` the
    ``(name, field)`` pairs it reads as ``name.field``."""

    def __init__(self, expression: str, tree: ast.Expression, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.expression = expression
        self._tree = tree
        self._functions = functions
        self.names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in functions)
        self.attributes = frozenset((n.value.id, n.attr) for n in ast.walk(tree)
                                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name))

    def __call__(self, objects: Namespace, where: str = "selection") -> Any:
        """Evaluate on a collection, a record of per-event columns, or a mapping of names to columns."""
        return self._eval(self._tree.body, objects, where)

    def mask(self, columns: dict[str, Any], n: int, where: str) -> np.ndarray:
        """The cut on per-event columns as a boolean numpy mask of length ``n`` (NaN compares False)."""
        if not columns:
            raise UnitError(f"{where}: {self.expression!r} names no per-event column")
        result = self(ak.zip(dict(columns), depth_limit=1), where)
        return np.asarray(ak.to_numpy(result), dtype=bool) if isinstance(result, ak.Array) else np.full(n, bool(result))

    def _lookup(self, objects: Namespace, name: str, where: str) -> Any:
        known: list[str] = list(objects) if isinstance(objects, Mapping) else (objects.fields or [])
        if name not in known:
            raise InputError(f"{where}: field {name!r} of {self.expression!r} not in collection (has {known}){suggest(name, known)}")
        return objects[name]

    def _eval(self, node: ast.AST, objects: Namespace, where: str) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self._functions[node.id] if node.id in self._functions else self._lookup(objects, node.id, where)
        if isinstance(node, ast.Attribute):
            value = self._eval(node.value, objects, where)
            return self._lookup(value, node.attr, f"{where}: {ast.unparse(node.value)}")
        if isinstance(node, ast.Call):
            return self._functions[node.func.id](*(self._eval(a, objects, where) for a in node.args))  # type: ignore[attr-defined]
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._eval(node.operand, objects, where))
        if isinstance(node, ast.BoolOp):
            values = [self._eval(v, objects, where) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, objects, where), self._eval(node.right, objects, where))
        if isinstance(node, ast.Compare):
            left, out = self._eval(node.left, objects, where), None
            for op, right_node in zip(node.ops, node.comparators):
                right = self._eval(right_node, objects, where)
                cmp = _COMPARE[type(op)](left, right)
                out = cmp if out is None else np.logical_and(out, cmp)
                left = right
            return out
        raise UnitError(f"{where}: unsupported expression {self.expression!r}")


def _logic_in_comparison(node: ast.Compare) -> bool:
    """A comparison with an ``&``/``|`` operand: ``a > 1 & b < 2`` reads ``a > (1 & b) < 2``."""
    return any(isinstance(x, ast.BinOp) and isinstance(x.op, (ast.BitAnd, ast.BitOr)) for x in (node.left, *node.comparators))


class Language:
    """What a cut may say: the syntax whitelist, the callable ``functions`` and (``attributes``) ``name.field``."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]], attributes: bool = False) -> None:
        self.functions = dict(functions)
        self._nodes = _ALLOWED_NODES + ((ast.Attribute,) if attributes else ())
        self._parse = lru_cache(maxsize=1024)(self._refusal_or_cut)  # each expression is parsed once

    def _refusal_or_cut(self, expression: str) -> Cut | str:
        """The parsed cut, or the reason it is refused."""
        try:
            tree = ast.parse(expression, mode="eval")
        except SyntaxError as exc:
            return f"cannot parse {expression!r}: {exc.msg}"
        for node in ast.walk(tree):
            if not isinstance(node, self._nodes):
                return f"{type(node).__name__} is not allowed in {expression!r}"
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in self.functions):
                return f"only {sorted(self.functions)} may be called in {expression!r}"
            if isinstance(node, ast.Attribute) and not isinstance(node.value, ast.Name):
                return f"only name.field may be read in {expression!r}, not {ast.unparse(node)!r}"
            if isinstance(node, ast.Compare) and _logic_in_comparison(node):
                return (f"{expression!r}: '&' and '|' bind tighter than comparisons; "
                        "write (a > 1) & (b < 2), or a > 1 and b < 2")
        return Cut(expression, tree, self.functions)

    def parse(self, expression: str, where: str = "selection") -> Cut:
        """A :class:`Cut` from its text; a :class:`UnitError` naming ``where`` (if given) if it is malformed or not allowed."""
        prefix = f"{where}: " if where else ""
        if not isinstance(expression, str):
            raise UnitError(f"{prefix}a cut must be a string, got {expression!r}")
        cut = self._parse(expression)
        if isinstance(cut, str):
            raise UnitError(f"{prefix}{cut}")
        return cut


#: the cut language of unit files: columns of one collection (or per-event columns), abs, sqrt, hypot, minimum, maximum
UNIT_CUTS = Language({"abs": abs, "sqrt": np.sqrt, "hypot": np.hypot, "minimum": np.minimum, "maximum": np.maximum})

#: cuts on reco objects that may also read ``Collection.field``: the field of the object of ``Collection`` the reco
#: object points to through its cross-reference (``GenPart.pdgId`` through ``genPartIdx``; see ``match.selection``)
REFERENCE_CUTS = Language(UNIT_CUTS.functions, attributes=True)


def parse(expression: str, where: str = "selection") -> Cut:
    """A unit-file :class:`Cut` from its text (see :meth:`Language.parse`)."""
    return UNIT_CUTS.parse(expression, where)


def select(expression: str, objects: ak.Array, where: str = "selection") -> Any:
    """Evaluate a cut such as ``(abs(pdgId) == 13) & (status == 1)`` on a collection (no Python eval of arbitrary code);
    on a jagged collection of numeric fields, on their flat numpy values (one awkward broadcast per operation is slow)."""
    cut = parse(expression, where)
    columns = _flat_columns(objects, cut.names)
    if columns is None:
        return cut(objects, where)
    counts = ak.num(objects, axis=1)
    result = cut(columns, where)
    return ak.unflatten(np.broadcast_to(result, (int(ak.sum(counts)),)), counts)


def _flat_columns(objects: Any, names: frozenset[str]) -> dict[str, np.ndarray] | None:
    """The flat numpy values of the ``names`` of a jagged record array (None where it is not one, lacks a name, or a
    field is not plain numbers: the general path then evaluates, or names the missing field)."""
    if not isinstance(objects, ak.Array) or objects.ndim != 2 or not objects.fields or not names <= set(objects.fields):
        return None
    columns = {}
    for name in names:
        values = ak.flatten(objects[name], axis=1)
        if not values.layout.is_numpy:
            return None
        columns[name] = ak.to_numpy(values)
    return columns
