"""Chunked readers of NanoAOD events from ROOT (uproot) and Parquet files.

Each file's NanoAOD version is told from its branches (or given). Branches are selected by name, renamed
to flashsim's working names (v15's ``PFMET`` is ``MET``), cast on read to the working types, and branches
the version does not store but lets one compute (:mod:`flashsim.io.derived`) are added, so files of any
version (uint32 or int32 counters, int16 or int32 indices) read alike.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from flashsim.errors import ConfigError, InputError
from flashsim.events import collection_of, from_branches
from flashsim.io.derived import add_derived, derivable, derivable_branches
from flashsim.io.schema import NanoVersion, ctype_dtype, detect_version, nano_version, nanoaod_types

__all__ = ["resolve_inputs", "open_source", "iterate_events", "read_events", "working_branches", "EventSource"]

PathLike = str | os.PathLike[str]


def resolve_inputs(inputs: PathLike | Iterable[PathLike]) -> list[Path]:
    """Expand a path, a glob or a list of them to existing files, in a stable order."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        if any(ch in text for ch in "*?["):
            matched = sorted(glob.glob(text))
            if not matched:
                raise InputError(f"no input file matches {text!r}")
            paths.extend(Path(m) for m in matched)
        else:
            path = Path(text)
            if path.is_dir():
                raise InputError(f"input {text!r} is a directory, not a file (a glob such as '{text}/*.root' reads its files)")
            if not path.is_file():
                raise InputError(f"input file {text!r} does not exist")
            paths.append(path)
    if not paths:
        raise InputError("no input files given")
    return paths


def _oneline(exc: BaseException) -> str:
    """``Type: message`` of a library's exception on one line (uproot's span several)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in {".parquet", ".pq"}


@dataclass
class EventSource:
    """One input file: its NanoAOD version, branch names (flashsim's), entry count and a ranged reader of named branches."""

    path: Path
    tree: str
    version: NanoVersion
    file_keys: list[str]  # as the file names them
    num_entries: int
    _handle: Any  # an uproot TTree or a pyarrow ParquetFile; neither library ships types

    @cached_property
    def _file_names(self) -> dict[str, str]:
        """flashsim's name -> the file's name of every stored branch."""
        return {self.version.working_name(k): k for k in self.file_keys}

    @cached_property
    def keys(self) -> list[str]:
        """Branch names as flashsim names them, with the branches derivable from the file's."""
        return list(self._file_names) + derivable_branches(set(self._file_names))

    def select(self, collections: Sequence[str] | None = None, branches: Sequence[str] | None = None) -> list[str]:
        """Branch names for whole ``collections`` plus single ``branches``; errors name what is missing."""
        if collections is None and branches is None:
            return list(self.keys)
        chosen: list[str] = []
        available = set(self.keys)
        for coll in collections or ():
            members = [k for k in self.keys if collection_of(k) == coll]
            if not members:
                raise InputError(f"{self.path}: no branch of collection {coll!r} in tree {self.tree!r}")
            chosen.extend(members)
        for name in branches or ():
            if name not in available:
                raise InputError(f"{self.path}: branch {name!r} not found in tree {self.tree!r}")
            if name not in chosen:
                chosen.append(name)
        return chosen

    def read(self, names: Sequence[str], start: int = 0, stop: int | None = None) -> dict[str, ak.Array]:
        """Read ``names`` (flashsim's names) for entries [start, stop), cast to flashsim's types."""
        stop = self.num_entries if stop is None else min(stop, self.num_entries)
        stored = self._file_names
        wanted = [n for n in names if n in stored]
        for name in names:  # the ingredients of derived branches
            if name not in stored:
                derivation = derivable(name, set(stored))
                wanted += [n for n in derivation.needs if n not in wanted] if derivation else [name]
        try:
            if _is_parquet(self.path):
                raw = _read_parquet(self._handle, [stored.get(n, n) for n in wanted], start, stop)
            else:
                raw = self._handle.arrays([stored.get(n, n) for n in wanted], entry_start=start, entry_stop=stop, how=dict)
        except InputError:
            raise
        except Exception as exc:  # uproot/pyarrow raise many types on damaged files
            raise InputError(f"{self.path}: cannot read entries {start}-{stop} ({_oneline(exc)})") from exc
        complete = working_branches(raw, self.version, self.path)
        return {name: complete[name] for name in names}


def working_branches(raw: Mapping[str, Any], version: NanoVersion, where: PathLike) -> dict[str, ak.Array]:
    """Branches of NanoAOD ``version`` (its names, as read from ``where``) renamed and cast to flashsim's, with the
    branches they let one derive added."""
    cast = {version.working_name(k): _cast(where, version.working_name(k), ak.Array(v)) for k, v in raw.items()}
    return add_derived(cast)


def _read_parquet(handle, names: Sequence[str], start: int, stop: int) -> dict[str, ak.Array]:
    groups, offset = [], 0
    for i in range(handle.metadata.num_row_groups):
        n = handle.metadata.row_group(i).num_rows
        if offset < stop and offset + n > start:
            groups.append((i, offset))
        offset += n
    if not groups:
        return {name: ak.Array(np.zeros(0)) for name in names}
    table = handle.read_row_groups([g for g, _ in groups], columns=list(names))
    first = groups[0][1]
    table = table.slice(start - first, stop - start)
    return {name: ak.from_arrow(table.column(name), highlevel=True) for name in names}


def _cast(path: PathLike, name: str, values: ak.Array) -> ak.Array:
    expected = nanoaod_types().get(name)
    values = ak.to_packed(ak.without_parameters(ak.fill_none(values, 0) if values.layout.is_option else values))
    if expected is None:
        return values
    depth = values.ndim
    if depth != (2 if expected.jagged else 1):
        shape = "one list per event" if expected.jagged else "one value per event"
        raise InputError(f"{path}: branch {name!r} has type {values.type.content}, expected {shape} of {expected.dtype}")
    leaf = ak.flatten(values, axis=None) if depth > 1 else values
    try:
        kind = np.asarray(leaf).dtype.kind
    except Exception as exc:
        raise InputError(f"{path}: branch {name!r} is not numeric (expected {expected.dtype})") from exc
    if kind not in "biuf":
        raise InputError(f"{path}: branch {name!r} has non-numeric type {values.type.content}, expected {expected.dtype}")
    # versions differ in integer widths and signs only: another kind of value is a foreign or broken file, never cast
    # (integer 0/1 flags are accepted for a boolean)
    want = expected.dtype.kind
    same_kind = kind == want or {kind, want} <= set("iu")
    if not same_kind and not (want == "b" and kind in "iu" and np.isin(np.asarray(leaf), (0, 1)).all()):
        found = {"b": "booleans", "i": "integers", "u": "integers", "f": "floating-point values"}[kind]
        raise InputError(f"{path}: branch {name!r} holds {found} ({np.asarray(leaf).dtype}), expected {expected.dtype}: "
                         "no NanoAOD version stores it so")
    return ak.values_astype(values, expected.dtype)


def _numpy_types(handle: Any, parquet: bool) -> dict[str, np.dtype]:
    """Leaf dtype of every numeric branch of an open file (branch -> dtype)."""
    out: dict[str, np.dtype] = {}
    if parquet:
        import pyarrow as pa

        for fld in handle.schema_arrow:
            leaf = fld.type
            while pa.types.is_list(leaf) or pa.types.is_large_list(leaf):
                leaf = leaf.value_type
            if pa.types.is_integer(leaf) or pa.types.is_floating(leaf) or pa.types.is_boolean(leaf):
                out[fld.name] = np.dtype(leaf.to_pandas_dtype())
        return out
    for name, typename in handle.typenames().items():
        dtype = ctype_dtype(typename)
        if dtype is not None:
            out[name] = dtype
    return out


def open_source(path: PathLike, tree: str = "Events", version: str | NanoVersion | None = None) -> EventSource:
    """Open one ROOT or Parquet file of the given NanoAOD ``version`` (default: told from its branches)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"input {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"input file {str(path)!r} does not exist")
    kind, signature = ("Parquet", b"PAR1") if _is_parquet(path) else ("ROOT", b"root")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(signature))
    except PermissionError as exc:
        raise InputError(f"{path}: cannot read the file (permission denied)") from exc
    if head != signature:
        what = "an empty file" if not head else f"it does not start with {signature!r}"
        raise InputError(f"{path}: unreadable or truncated file (not a {kind} file: {what})")
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            handle = pq.ParquetFile(path)
            keys = list(handle.schema_arrow.names)
            num_entries = handle.metadata.num_rows
        else:
            import uproot

            rootfile = uproot.open(path)
            trees = [k.split(";")[0] for k, cls in rootfile.classnames().items() if cls == "TTree"]
            if tree not in trees:
                raise InputError(f"{path}: no TTree {tree!r} (found: {', '.join(trees) or 'none'})")
            handle = rootfile[tree]
            keys = list(handle.keys())
            num_entries = int(handle.num_entries)
    except InputError:
        raise
    except PermissionError as exc:
        raise InputError(f"{path}: cannot read the file (permission denied)") from exc
    except Exception as exc:
        raise InputError(f"{path}: unreadable or truncated file ({_oneline(exc)})") from exc
    if num_entries == 0:
        raise InputError(f"{path}: tree {tree!r} has zero events")
    told = detect_version(_numpy_types(handle, _is_parquet(path))) if version is None else nano_version(version)
    return EventSource(path, tree, told, keys, num_entries, handle)


def iterate_events(
    inputs: PathLike | Iterable[PathLike],
    step_size: int = 100_000,
    collections: Sequence[str] | None = None,
    branches: Sequence[str] | None = None,
    tree: str = "Events",
) -> Iterator[ak.Array]:
    """Yield event records of at most ``step_size`` events, file after file (memory bounded by the chunk)."""
    if step_size <= 0:
        raise ConfigError(f"step_size must be positive, got {step_size}")
    for path in resolve_inputs(inputs):
        source = open_source(path, tree)
        names = source.select(collections, branches)
        for start in range(0, source.num_entries, step_size):
            yield from_branches(source.read(names, start, start + step_size))


def read_events(
    inputs: PathLike | Iterable[PathLike],
    collections: Sequence[str] | None = None,
    branches: Sequence[str] | None = None,
    tree: str = "Events",
) -> ak.Array:
    """Read whole files into one event record (use :func:`iterate_events` for large inputs)."""
    chunks = list(iterate_events(inputs, 1 << 62, collections, branches, tree))
    return chunks[0] if len(chunks) == 1 else ak.concatenate(chunks)
