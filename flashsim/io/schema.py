"""NanoAOD versions as data: each version's branch names and types, from tables shipped with flashsim.

``data/nanoaod_<version>.tsv`` lists a version's branches (name, C type, title) as a real CMS file has
them; ``data/nanoaod_versions.toml`` describes each version and the collections and branches it names differently.
flashsim works in NanoAOD v9's names and types (:data:`WORKING_VERSION`): files of other versions are
cast and renamed on read and back on write.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files

import numpy as np

from flashsim.errors import ConfigError
from flashsim.events import collection_of, is_counter
from flashsim.registry import suggest

__all__ = ["BranchType", "NanoVersion", "VERSIONS", "WORKING_VERSION", "nano_version", "detect_version", "nanoaod_types", "versions_storing",
           "ctype_dtype"]

WORKING_VERSION = "v9"

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


@dataclass(frozen=True)
class NanoVersion:
    """One NanoAOD version: its branch types and the collections or branches it names unlike flashsim (``MET`` -> ``PFMET``)."""

    name: str
    run: int  # LHC Run 2 or 3
    description: str
    types: Mapping[str, BranchType]
    renamed: Mapping[str, str]  # flashsim's (v9) name of a collection or branch -> this version's

    def __str__(self) -> str:
        return self.name

    @cached_property
    def collections(self) -> frozenset[str]:
        """Names of the collections (and prefix-less branches) this version has."""
        return frozenset(collection_of(b) for b in self.types)

    @cached_property
    def working_names(self) -> frozenset[str]:
        """Every branch this version stores, as flashsim names it."""
        return frozenset(self.working_name(b) for b in self.types)

    @cached_property
    def _working_names(self) -> dict[str, str]:
        return {v: k for k, v in self.renamed.items()}

    def file_name(self, branch: str) -> str:
        """This version's name of a branch named as flashsim names it (``MET_pt`` -> ``PFMET_pt`` in v15)."""
        return _rename(branch, self.renamed)

    def working_name(self, branch: str) -> str:
        """flashsim's name of a branch of this version (``PFMET_pt`` -> ``MET_pt``)."""
        return _rename(branch, self._working_names)

    def dtype(self, branch: str) -> np.dtype | None:
        """Type of a branch (this version's name) in this version; None where the version has no such branch."""
        known = self.types.get(branch)
        return None if known is None else known.dtype


def _rename(branch: str, mapping: Mapping[str, str]) -> str:
    """A branch renamed by name, else by its collection's name."""
    if branch in mapping:
        return mapping[branch]
    coll = collection_of(branch)
    if coll not in mapping:
        return branch
    if is_counter(branch):
        return "n" + mapping[coll]
    return mapping[coll] + branch[len(coll):]


def ctype_dtype(ctype: str) -> np.dtype | None:
    """Numpy dtype of a ROOT leaf's C type (``int16_t``, ``float``; a trailing ``[]`` ignored); None if not numeric."""
    known = _C_TYPES.get(ctype.removesuffix("[]"))
    return None if known is None else np.dtype(known)


def _read_table(name: str) -> dict[str, BranchType]:
    text = files("flashsim").joinpath(f"data/nanoaod_{name}.tsv").read_text()
    types: dict[str, BranchType] = {}
    for line in text.splitlines()[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        branch, ctype, *_ = line.split("\t")
        types[branch] = BranchType(np.dtype(_C_TYPES[ctype.removesuffix("[]")]), ctype.endswith("[]"))
    return types


@cache
def _described() -> dict[str, dict]:
    return tomllib.loads(files("flashsim").joinpath("data/nanoaod_versions.toml").read_text())


VERSIONS: tuple[str, ...] = tuple(_described())  # oldest first


@cache
def _version(name: str) -> NanoVersion:
    entry = _described()[name]
    return NanoVersion(name, entry["run"], entry["description"], _read_table(name), dict(entry.get("renamed", {})))


def nano_version(name: str | NanoVersion) -> NanoVersion:
    """The version called ``name`` (``v12``, ``12`` or ``NanoAODv12``); a :class:`ConfigError` names the known ones."""
    if isinstance(name, NanoVersion):
        return name
    key = str(name).strip().lower().removeprefix("nanoaod")
    key = key if key.startswith("v") else f"v{key}"
    if key not in VERSIONS:
        raise ConfigError(f"unknown NanoAOD version {name!r}{suggest(key, VERSIONS)} (known: {', '.join(VERSIONS)})")
    return _version(key)


def nanoaod_types() -> Mapping[str, BranchType]:
    """Branch name -> type in flashsim's working version (v9)."""
    return _version(WORKING_VERSION).types


def detect_version(dtypes: Mapping[str, np.dtype]) -> NanoVersion:
    """The version whose table best matches a file's branches (name -> dtype).

    Each version scores its branches present with its type, less the file's branches of the collections it
    knows that it lacks; counters do not count (uproot writes every counter as int32). Ties go to the newest.
    """
    best: tuple[int, int] | None = None
    chosen = _version(WORKING_VERSION)
    for order, version in enumerate(map(_version, VERSIONS)):
        score = 0
        for branch, dtype in dtypes.items():
            if is_counter(branch):
                continue
            known = version.types.get(branch)
            if known is not None:
                score += 1 if known.dtype == dtype else 0
            elif collection_of(branch) in version.collections:
                score -= 1
        if best is None or (score, order) >= best:
            best, chosen = (score, order), version
    return chosen


def versions_storing(branches: Iterable[str], derived: bool = False) -> list[str]:
    """Versions that store every branch (flashsim's names) or imply it (Run-3 ``Photon_mass``), or with ``derived``
    let one compute the rest."""
    from flashsim.io.derived import derivable, left_out_on_write

    wanted = list(branches)
    found = []
    for name in VERSIONS:
        version = _version(name)
        stored = version.working_names
        if all(b in stored or left_out_on_write(b, stored) or (derived and derivable(b, set(stored))) for b in wanted):
            found.append(name)
    return found
