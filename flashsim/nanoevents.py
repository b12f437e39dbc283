"""Flash simulation on the fly in coffea: GEN NanoEvents in, NanoEvents with the chain's collections out.

The chain runs on the events' GEN branches exactly as ``Chain.generate`` runs on a chunk of a file (random numbers
are keyed by the event, so any chunking gives the file route's numbers), and its output branches, typed as the writer
types them, are handed to coffea's ``NanoEventsFactory.from_preloaded``: NanoAODSchema builds the result as it builds a
written file, so ``Jet.matched_gen``, ``Muon.matched_gen`` and ``MET`` are coffea's own, not re-implemented here.
Eager and virtual (lazy) NanoEvents both work, hence coffea's ``processor.Runner`` with any executor, a local dask
``distributed`` cluster included. dask-awkward NanoEvents do not: dask-awkward (up to 2026.2) requires dask < 2025.4,
older than the dask flashsim's ``distributed`` runs on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

import awkward as ak
import numpy as np

from flashsim.chain import EVENT_ID_COLUMNS, GEN_PREFIXES, Chain
from flashsim.errors import ChainError, FlashsimError, InputError
from flashsim.events import collection_of, from_branches
from flashsim.io.reader import working_branches
from flashsim.io.schema import NanoVersion, detect_version
from flashsim.io.schema import nano_version as _nano_version
from flashsim.io.writer import typed_branches

__all__ = ["simulate"]


def simulate(events: ak.Array, chain: Chain | str | Sequence[str], seed: int = 0, *, oversample: int = 1, batch_size: int = 100_000,
             nano_version: str | NanoVersion | None = None, device: str = "cpu") -> ak.Array:
    """NanoEvents (NanoAODSchema) of ``events``' GEN collections and the chain's, as ``generate --keep-gen`` writes them.

    ``events``: eager or virtual NanoEvents of a GEN (or GEN+RECO) NanoAOD. ``chain``: a Chain, or unit names (a list
    or ``"muon,jet"``) loaded once per process on ``device``. ``oversample`` N simulates each event N times
    (``FlashSim.weight`` = 1/N, see :mod:`flashsim.histograms`). Branches are named and typed as NanoAOD
    ``nano_version`` has them (default: the input's).
    """
    if not isinstance(events, ak.Array):
        raise InputError(f"simulate takes eager or virtual coffea NanoEvents, got {type(events).__module__}.{type(events).__name__}; "
                         "run a processor over chunks with coffea's processor.Runner (any executor, dask's included)")
    if oversample < 1:
        raise ChainError(f"oversample must be >= 1, got {oversample}")
    if isinstance(chain, Chain):
        loaded = chain
    else:
        loaded = _loaded(tuple(chain.split(",") if isinstance(chain, str) else chain), device)
    columns = _file_columns(events)
    version = detect_version({name: _leaf_dtype(values) for name, values in columns.items()})
    raw = {name: values for name, values in columns.items()  # what generate reads and keeps: ids, GEN, the chain's inputs
           if (coll := collection_of(version.working_name(name))) in EVENT_ID_COLUMNS or coll in loaded.inputs
           or coll.startswith(GEN_PREFIXES)}
    found = getattr(events, "metadata", None)
    metadata = dict(found) if isinstance(found, dict) else None
    where = _location(metadata)
    try:
        gen = from_branches(working_branches(raw, version, where))
        result = loaded.process(gen, seed=seed, batch_size=batch_size, keep_gen=True, oversample=oversample)
    except FlashsimError as exc:  # a bad value or field: say in which file and entries
        raise type(exc)(f"{where}: {exc}") from exc
    branches = typed_branches(result, version if nano_version is None else _nano_version(nano_version))
    return _nanoevents(branches, len(result), metadata)


@lru_cache(maxsize=8)
def _loaded(units: tuple[str, ...], device: str) -> Chain:
    """One Chain per process and unit list (a processor's tasks run many chunks in the same worker)."""
    return Chain(units, device=device)


@cache
def _schema_fields() -> frozenset[str]:
    """Branch names NanoAODSchema adds to a file's (global indices and nested indexers such as ``GenPart_childrenIdxG``)."""
    from coffea.nanoevents import NanoAODSchema

    return frozenset({f"{name}G" for name in NanoAODSchema.all_cross_references} | set(NanoAODSchema.nested_items)
                     | set(NanoAODSchema.nested_index_items) | set(NanoAODSchema.special_items))


def _file_columns(events: ak.Array) -> dict[str, ak.Array]:
    """The events' branches as the file names them (``GenJet_pt``, ``run``), without the fields the schema adds; not loaded yet."""
    added = _schema_fields()
    columns: dict[str, ak.Array] = {}
    for name in events.fields:
        values = events[name]
        if values.fields:
            columns.update({f"{name}_{f}": ak.without_parameters(values[f]) for f in values.fields if f"{name}_{f}" not in added})
        else:
            columns[name] = ak.without_parameters(values)
    return columns


def _leaf_dtype(values: ak.Array) -> np.dtype:
    """The numeric type of a column, from its form (a virtual column is not loaded)."""
    form = values.layout.form
    while hasattr(form, "content"):
        form = form.content
    primitive = getattr(form, "primitive", None)
    return np.dtype(ak.types.numpytype.primitive_to_dtype(primitive)) if primitive else np.dtype(object)


def _location(metadata: dict[str, Any] | None) -> str:
    """Where a chunk of NanoEvents comes from, for error messages (coffea's Runner sets file and entries)."""
    if metadata and "filename" in metadata:
        return f"{metadata['filename']} (entries {metadata.get('entrystart')}-{metadata.get('entrystop')})"
    return "NanoEvents"


class _Columns(dict):
    """An in-memory column source for ``NanoEventsFactory.from_preloaded`` (a mapping with ``metadata``)."""

    def __init__(self, branches: dict[str, ak.Array], num_rows: int) -> None:
        super().__init__(branches)
        self.metadata = {"uuid": uuid.uuid4().hex, "num_rows": num_rows, "object_path": "Events"}


def _nanoevents(branches: dict[str, ak.Array], num_rows: int, metadata: dict[str, Any] | None) -> ak.Array:
    """NanoEvents built by NanoAODSchema from flat branches, as from a file holding them."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    packed = {name: ak.to_packed(values) for name, values in branches.items()}  # coffea reads only packed lists
    source = _Columns(packed, num_rows)
    return NanoEventsFactory.from_preloaded(source, schemaclass=NanoAODSchema, metadata=metadata).events()
