"""The cut language of unit files (``abs(pdgId) == 13 & (status == 1)``): parsed once into a
:class:`Cut`, checked against a small whitelist of Python syntax, evaluated on awkward columns."""

from __future__ import annotations

import ast
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import awkward as ak
import numpy as np

from flashsim.errors import InputError, UnitError

__all__ = ["Cut", "parse", "select"]

_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load, ast.Constant,
    ast.Call, ast.And, ast.Or, ast.BitAnd, ast.BitOr, ast.Invert, ast.Not, ast.USub, ast.Add, ast.Sub,
    ast.Mult, ast.Div, ast.Mod, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)
_FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "sqrt": np.sqrt, "hypot": np.hypot}
_UNARY = {ast.USub: lambda v: -v, ast.Invert: lambda v: ~v, ast.Not: lambda v: ~v}
_BINARY = {ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or, ast.Add: np.add, ast.Sub: np.subtract,
           ast.Mult: np.multiply, ast.Div: np.divide, ast.Mod: np.mod}
_COMPARE = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
            ast.Gt: np.greater, ast.GtE: np.greater_equal}


class Cut:
    """A parsed, whitelisted cut expression; ``names`` are the columns it reads."""

    def __init__(self, expression: str, tree: ast.Expression) -> None:
        self.expression = expression
        self._tree = tree
        self.names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in _FUNCTIONS)

    def __call__(self, objects: ak.Array, where: str = "selection") -> Any:
        """Evaluate on a collection (or a record of per-event columns)."""
        return self._eval(self._tree.body, objects, where)

    def mask(self, columns: dict[str, Any], n: int, where: str) -> np.ndarray:
        """The cut on per-event columns as a boolean numpy mask of length ``n`` (NaN compares False)."""
        if not columns:
            raise UnitError(f"{where}: {self.expression!r} names no per-event column")
        result = self(ak.zip(dict(columns), depth_limit=1), where)
        return np.asarray(ak.to_numpy(result), dtype=bool) if isinstance(result, ak.Array) else np.full(n, bool(result))

    def _eval(self, node: ast.AST, objects: ak.Array, where: str) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in _FUNCTIONS:
                return _FUNCTIONS[node.id]
            if node.id not in objects.fields:
                raise InputError(f"{where}: field {node.id!r} of {self.expression!r} not in collection (has {objects.fields})")
            return objects[node.id]
        if isinstance(node, ast.Call):
            return _FUNCTIONS[node.func.id](*(self._eval(a, objects, where) for a in node.args))  # type: ignore[attr-defined]
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


@lru_cache(maxsize=1024)
def _parse(expression: str) -> Cut | str:
    """The parsed cut, or the reason it is refused (cached: each expression is parsed once)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        return f"cannot parse {expression!r}: {exc.msg}"
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            return f"{type(node).__name__} is not allowed in {expression!r}"
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            return f"only {sorted(_FUNCTIONS)} may be called in {expression!r}"
    return Cut(expression, tree)


def parse(expression: str, where: str = "selection") -> Cut:
    """A :class:`Cut` from its text; a :class:`UnitError` naming ``where`` if it is malformed or not allowed."""
    if not isinstance(expression, str):
        raise UnitError(f"{where}: a cut must be a string, got {expression!r}")
    cut = _parse(expression)
    if isinstance(cut, str):
        raise UnitError(f"{where}: {cut}")
    return cut


def select(expression: str, objects: ak.Array, where: str = "selection") -> Any:
    """Evaluate a cut such as ``abs(pdgId) == 13 & status == 1`` on a collection (no Python eval of arbitrary code)."""
    return parse(expression, where)(objects, where)
