"""Writers of NANOAOD-like output: a ROOT TTree ``Events`` (uproot) or Parquet, appended chunk by chunk.

Files are written under a temporary name and renamed on success, so an interrupted run never
leaves a file that looks complete.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import awkward as ak
import numpy as np

from flashsim.errors import ConfigError, InputError, OutputError
from flashsim.events import collection_of, is_counter, to_branches
from flashsim.files import remove_stale_temporaries, temporary_sibling
from flashsim.io.derived import DERIVATIONS, ON_WRITE, left_out_on_write
from flashsim.io.schema import WORKING_VERSION, NanoVersion, nano_version, nanoaod_types

__all__ = ["NanoAODWriter", "write_events", "format_of", "typed_branches"]

Format = Literal["root", "parquet"]


def format_of(path: str | os.PathLike[str], fmt: str | None = None) -> Format:
    """Output format from an explicit choice or the file suffix."""
    if fmt is None:
        fmt = "parquet" if Path(path).suffix.lower() in {".parquet", ".pq"} else "root"
    if fmt not in ("root", "parquet"):
        raise ConfigError(f"{os.fspath(path)}: unknown output format {fmt!r} (expected 'root' or 'parquet')")
    return fmt  # type: ignore[return-value]


def typed_branches(events: ak.Array, version: NanoVersion, strict: bool = False) -> dict[str, ak.Array]:
    """Flat branches named and typed as ``version`` has them, with those it stores that the events lack but let one
    compute (v12's ``Jet_jetId`` from the Run-3 jet unit's fractions and multiplicities, v7's photon ID bitmap); branches
    it lacks keep flashsim's types, or are left out where the version has their collection and either ``strict`` or the
    value is implied (Run-3 ``Photon_mass``)."""
    typed = {}
    branches = to_branches(events)
    for derivation in (*DERIVATIONS, *ON_WRITE):  # what the version stores and the events lack but let one compute
        if (derivation.branch not in branches and version.file_name(derivation.branch) in version.types
                and set(derivation.needs) <= set(branches)):
            branches[derivation.branch] = derivation.compute(*(branches[n] for n in derivation.needs))
    for name, values in branches.items():
        branch = version.file_name(name)
        lacking = branch not in version.types and collection_of(branch) in version.collections
        if lacking and (strict or left_out_on_write(name, version.working_names)):
            continue
        dtype = version.dtype(branch)
        if dtype is None and name in nanoaod_types():
            dtype = nanoaod_types()[name].dtype
        typed[branch] = values if dtype is None or is_counter(name) else ak.values_astype(values, dtype)
    return typed


def _reason(exc: OSError) -> str:
    """An OS error in words, with the path it names (e.g. the temporary file)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


class NanoAODWriter:
    """Append event records to one NANOAOD-like file, named and typed as NanoAOD ``version``; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], format: str | None = None, tree: str = "Events",
                 version: str | NanoVersion = WORKING_VERSION, strict: bool = False) -> None:
        self.path = Path(path)
        self.version = nano_version(version)
        self.strict = strict  # leave out branches the version lacks (of the collections it has)
        self.format: Format = format_of(path, format)
        self.tree_name = tree
        if self.path.is_dir():
            raise OutputError(f"{self.path}: is an existing directory; give a file name such as {self.path / 'out.root'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create its directory {self.path.parent} ({_reason(exc)})") from exc
        remove_stale_temporaries(self.path)  # a killed earlier run's partial file
        self._tmp = temporary_sibling(self.path)
        # an uproot WritableDirectory (ROOT) or a pyarrow ParquetWriter; neither library ships types
        self._file: Any = None
        self._tree: Any = None  # the uproot WritableTree, ROOT only
        self._layout: dict[str, str] | None = None
        self.num_events = 0

    def write(self, events: ak.Array) -> None:
        """Append one chunk of events; every chunk must have the same branches."""
        branches = typed_branches(events, self.version, self.strict)
        try:
            if self.format == "root":
                self._write_root(branches)
            else:
                self._write_parquet(branches)
        except OutputError:
            raise
        except OSError as exc:  # read-only directory, full disk, quota
            raise OutputError(f"{self.path}: cannot write ({_reason(exc)})") from exc
        self.num_events += len(events)

    def _check_layout(self, branches: dict[str, ak.Array]) -> None:
        layout = {name: str(values.type.content) for name, values in branches.items()}
        if self._layout is None:
            self._layout = layout
            crossrefs = [k for k in layout if k.endswith(("_genPartIdx", "_genJetIdx"))]
            if crossrefs and not any(k.startswith("GenPart_") for k in layout):
                warnings.warn(
                    f"{self.path}: {', '.join(crossrefs)} written without a GenPart collection; "
                    "coffea's NanoAODSchema then drops every gen cross-reference (keep GEN collections)",
                    stacklevel=3,
                )
        elif layout != self._layout:
            missing = sorted(set(self._layout) ^ set(layout))
            changed = sorted(k for k in set(layout) & set(self._layout) if layout[k] != self._layout[k])
            raise InputError(f"{self.path}: chunk branches differ from the first chunk (added/removed {missing}, retyped {changed})")

    def _write_root(self, branches: dict[str, ak.Array]) -> None:
        import uproot

        self._check_layout(branches)
        collections: dict[str, dict[str, ak.Array]] = {}
        lists: dict[str, ak.Array] = {}  # prefix-less jagged branches such as LHEPdfWeight
        for name, values in branches.items():
            if values.ndim > 1 and "_" in name:
                coll, field = name.split("_", 1)
                collections.setdefault(coll, {})[field] = values
            elif values.ndim > 1:
                lists[name] = values
        # uproot writes the counter nX of each jagged collection or list itself
        grouped: dict[str, ak.Array | np.ndarray] = {
            name: ak.to_numpy(values)
            for name, values in branches.items()
            if values.ndim == 1 and not (is_counter(name) and (name[1:] in collections or name[1:] in lists))
        }
        grouped.update({coll: ak.zip(fields) for coll, fields in collections.items()})
        grouped.update(lists)
        if self._tree is None:
            self._file = uproot.recreate(self._tmp)
            types = {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in grouped.items()}
            self._tree = self._file.mktree(self.tree_name, types)
        self._tree.extend(grouped)

    def _write_parquet(self, branches: dict[str, ak.Array]) -> None:
        import pyarrow.parquet as pq

        self._check_layout(branches)
        table = ak.to_arrow_table(ak.zip(branches, depth_limit=1), extensionarray=False, list_to32=True)
        if self._file is None:
            self._file = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        self._file.write_table(table)

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        if self._file is None:
            raise InputError(f"{self.path}: no events were written; refusing to create an empty file")
        try:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self._file = None
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"{self.path}: cannot write ({_reason(exc)})") from exc
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NanoAODWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_events(events: ak.Array, path: str | os.PathLike[str], format: str | None = None,
                 version: str | NanoVersion = WORKING_VERSION) -> Path:
    """Write one event record to ``path`` atomically, as NanoAOD ``version`` names and types its branches."""
    with NanoAODWriter(path, format, version=version) as writer:
        writer.write(events)
    return writer.path
