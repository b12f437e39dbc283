"""NanoAOD branch types, read from the table of a real CMS NanoAOD shipped with flashsim."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np

from flashsim.events import is_counter

_C_TYPES = {
    "bool": np.bool_,
    "uint8_t": np.uint8,
    "int8_t": np.int8,
    "uint16_t": np.uint16,
    "int16_t": np.int16,
    "uint32_t": np.uint32,
    "int32_t": np.int32,
    "uint64_t": np.uint64,
    "int64_t": np.int64,
    "float": np.float32,
    "double": np.float64,
}


@dataclass(frozen=True)
class BranchType:
    """Numpy dtype of a NanoAOD branch and whether it holds one list per event."""

    dtype: np.dtype
    jagged: bool


@cache
def nanoaod_types() -> dict[str, BranchType]:
    """Branch name -> type for every branch of ``nanoaod_schema.tsv``."""
    text = files("flashsim").joinpath("data/nanoaod_schema.tsv").read_text()
    types: dict[str, BranchType] = {}
    for line in text.splitlines()[1:]:
        name, ctype, *_ = line.split("\t")
        jagged = ctype.endswith("[]")
        types[name] = BranchType(np.dtype(_C_TYPES[ctype.removesuffix("[]")]), jagged)
    return types


def dtype_of(branch: str, default: np.dtype | None = None) -> np.dtype | None:
    """NanoAOD dtype of ``branch``; counters ``nX`` are int32 as uproot writes them (NanoAOD v12+)."""
    known = nanoaod_types().get(branch)
    if known is not None and not is_counter(branch):
        return known.dtype
    if known is not None:
        return np.dtype(np.int32)
    return default
