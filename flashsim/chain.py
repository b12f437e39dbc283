"""The chain orchestrator: orders units by their declared inputs and outputs, runs them on
chunks of GEN events, and streams NANOAOD-like output.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch

from flashsim import features
from flashsim.crossrefs import with_back_references
from flashsim.errors import ChainError, ConfigError, FlashsimError, InputError, OutputError
from flashsim.events import collection_of, from_branches
from flashsim.io import NanoAODWriter, open_source, resolve_inputs
from flashsim.io.derived import left_out_on_write
from flashsim.io.schema import NanoVersion, nano_version
from flashsim.input_checks import DeclaredRange, bad_events, declared_ranges
from flashsim.interrupts import stop_if_signalled
from flashsim.locations import DEFAULT_CHAIN
from flashsim.processes import Chunk, chunks_of, run_in_processes
from flashsim.spec import UnitSpec
from flashsim.unit import Unit, load_unit

__all__ = ["Chain", "resolve_device", "DEFAULT_CHAIN", "EVENT_ID_COLUMNS"]

EVENT_ID_COLUMNS = ("run", "luminosityBlock", "event")
MIN_PARALLEL_CHUNK = 1_000  # events: below this a chunk's overheads outweigh its simulation
# kept by --keep-gen: GenPart, GenJet, GenMET, GenVtx, Generator, genWeight, genTtbarId, LHE*, PSWeight, Pileup, HTXS
GEN_PREFIXES = ("Gen", "gen", "LHE", "Pileup", "PSWeight", "HTXS", "FlashSim")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a device this machine lacks is a :class:`ConfigError`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {str(device)!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return resolved


class Chain:
    """An ordered list of units; a later unit may condition on the outputs of earlier ones."""

    def __init__(self, units: Iterable[Unit | str | os.PathLike[str]], device: str | torch.device = "cpu",
                 precision: str = "float32") -> None:
        """``precision``: that of the coupling flows' conditioner networks (:data:`flashsim.models.PRECISIONS`); units
        given loaded must have been loaded with it."""
        self.device = resolve_device(device)
        self.precision = precision
        loaded = [u if isinstance(u, Unit) else load_unit(os.fspath(u), self.device, precision=precision) for u in units]
        names = [u.name for u in loaded]
        if len(set(names)) != len(names):
            raise ChainError(f"unit names must be unique in a chain, got {names}")
        for unit in loaded:
            if unit.model is not None and unit.model.precision != precision:
                raise ChainError(f"unit {unit.name!r} was loaded to sample in {unit.model.precision}, the chain's precision is "
                                 f"{precision}: load it with load_unit(..., precision={precision!r}) or give its name")
        self.units: list[Unit] = _order(loaded)

    def __repr__(self) -> str:
        return f"Chain({' -> '.join(u.name for u in self.units)})"

    @property
    def outputs(self) -> list[str]:
        return list(dict.fromkeys(c for u in self.units for c in u.spec.produces))

    @property
    def inputs(self) -> set[str]:
        """Collections the chain needs from the GEN input (not produced by any of its units)."""
        produced = set(self.outputs)
        return {c for u in self.units for c in u.spec.inputs if c not in produced}

    @property
    def input_ranges(self) -> dict[str, DeclaredRange]:
        """GEN branch -> the range every unit reading it declares (``ranges.inputs`` of the unit files)."""
        produced = set(self.outputs)
        return declared_ranges((u.name, {k: r for k, r in u.spec.ranges.inputs.items() if k.partition(".")[0] not in produced})
                               for u in self.units)

    def check(self, available: Iterable[str]) -> None:
        """Fail clearly when an input collection nobody provides is missing."""
        have = set(available)
        for unit in self.units:
            produced = {c for u in self.units[: self.units.index(unit)] for c in u.spec.produces}
            for coll, what in _earlier_collections(unit.spec):
                if coll not in produced:
                    raise ChainError(f"unit {unit.name!r} {what}; no earlier unit of the chain produces {coll!r}")
            for coll in sorted(unit.spec.inputs):
                if unit.spec.merge and coll == unit.spec.output:
                    continue  # a merging unit creates the collection when no earlier unit produced it
                if coll not in have and coll not in produced:
                    raise ChainError(
                        f"unit {unit.name!r} needs column {coll!r}, which is neither in the input "
                        f"(has {sorted(have)}) nor produced by an earlier unit"
                    )

    def run(self, events: ak.Array, seed: int = 0, batch_size: int = 100_000) -> ak.Array:
        """Run every unit in order on one chunk of events; returns the events with the new collections.

        An event unit with a ``selection`` drops the events that fail it (its output defines an
        analysis-specific sample), so the result may hold fewer events than the input.
        """
        self.check(events.fields)
        bad_events(events, self.inputs, skip=False, declared=self.input_ranges)  # a non-finite or unphysical GEN value is an error
        return self._run_units(events, seed, batch_size)

    def _run_units(self, events: ak.Array, seed: int, batch_size: int) -> ak.Array:
        """Each unit in order; after each, the back-references between the collections the chain produced
        (``Jet.electronIdx1``) follow any change of either."""
        produced: set[str] = set()
        for unit in self.units:
            events = unit.run(events, seed=seed, device=self.device, batch_size=batch_size)
            produced |= set(unit.spec.produces)
            events = with_back_references(events, produced, unit.spec.produces)
        return events

    def generate(
        self,
        inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        output: str | os.PathLike[str],
        *,
        format: str | None = None,
        seed: int = 0,
        step_size: int = 50_000,
        batch_size: int = 100_000,
        keep_gen: bool = False,
        oversample: int = 1,
        select: Iterable[tuple[int, int, int]] | None = None,
        processes: int = 1,
        on_bad_input: Literal["error", "skip"] = "error",
        nano_version: str | NanoVersion | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Stream GEN files through the chain into one NANOAOD-like file; returns the number of events written.

        ``select`` keeps only the events with these (run, luminosityBlock, event): each comes out exactly as
        in a run over the whole input (random numbers are keyed by the event). ``processes > 1`` simulates
        chunks in that many local worker processes (one torch thread each), written in input order; chunks are
        then cut smaller than ``step_size`` where needed to give every process several (the output does not
        depend on the chunking). As with any multiprocessing, a script doing this needs the
        ``if __name__ == "__main__":`` guard. With ``on_bad_input = "skip"`` events with a non-finite or
        unphysical GEN value are dropped; ``skipped_events`` then counts them by branch. The output names and types
        its branches as NanoAOD ``nano_version`` does (default: the inputs' version, so that kept GEN is as it was).
        """
        if oversample < 1:
            raise ChainError(f"oversample must be >= 1, got {oversample}")
        if processes < 1:
            raise ConfigError(f"processes must be >= 1, got {processes}")
        files = resolve_inputs(inputs)
        target = os.path.realpath(output)
        entries = []
        versions: dict[str, list[str]] = {}
        sources: dict[str, Any] = {}  # opened once: the checks below and then the simulation read them
        for path in files:  # before writing anything: each input has what the chain needs, none is the output
            if os.path.realpath(path) == target:
                raise OutputError(f"{output}: the output is also an input; writing it would replace the input")
            source = sources.setdefault(str(path), open_source(path))
            try:
                self.check({collection_of(k) for k in source.keys})
            except ChainError as exc:
                raise InputError(f"{path}: {exc}") from exc
            entries.append(source.num_entries)
            versions.setdefault(source.version.name, []).append(str(path))
        self.nano_version = self._output_version(nano_version, versions)
        if processes > 1:  # several chunks per process, so that all stay busy to the end
            step_size = min(step_size, max(MIN_PARALLEL_CHUNK, -(-sum(entries) // (4 * processes))))
        chunks = chunks_of(files, entries, step_size)
        if on_bad_input not in ("error", "skip"):
            raise ConfigError(f"on_bad_input must be 'error' or 'skip', got {on_bad_input!r}")
        settings = _Settings(seed, batch_size, keep_gen, oversample,
                             None if select is None else frozenset(tuple(int(v) for v in ids) for ids in select),
                             on_bad_input == "skip")
        if processes > 1:
            units = [_unit_directory(u) for u in self.units]
            results = run_in_processes(partial(_chunk_simulator, units, str(self.device), self.precision, settings), chunks, processes)
        else:
            simulate = self._simulator(settings, sources)
            results = (simulate(chunk) for chunk in chunks)
        self.skipped_events: Counter[str] = Counter()
        with NanoAODWriter(output, format, version=self.nano_version) as writer:
            for chunk, (result, skipped) in zip(chunks, results):
                stop_if_signalled()
                writer.write(result)
                self.skipped_events.update(skipped)
                if progress is not None:
                    progress(chunk.stop - chunk.start)
        return writer.num_events

    def _output_version(self, asked: str | NanoVersion | None, found: dict[str, list[str]]) -> NanoVersion:
        """The version asked for, else the inputs' one; warns of unit branches that version does not have."""
        if asked is None and len(found) > 1:
            listed = "; ".join(f"{v}: {', '.join(paths)}" for v, paths in found.items())
            raise InputError(f"the inputs are of different NanoAOD versions ({listed}); choose the output's with nano_version")
        version = nano_version(asked if asked is not None else next(iter(found)))
        lacking: dict[str, list[str]] = {}  # branch -> the units writing it (one warning, however many units write it)
        for unit in self.units:
            for b in unit.spec.reco_branches:
                if version.file_name(b) not in version.types and collection_of(b) in version.collections and not left_out_on_write(b, version.working_names):
                    lacking.setdefault(version.file_name(b), []).append(unit.name)
        if lacking:
            listed = "; ".join(f"{b} (units {', '.join(names)})" for b, names in lacking.items())
            warnings.warn(f"NanoAOD {version} has no {listed}: written as extra branches", stacklevel=3)
        return version

    def _simulator(self, settings: _Settings, sources: dict[str, Any] | None = None) -> Callable[[Chunk], tuple[ak.Array, Counter[str]]]:
        """A function from a chunk of an input file to its output record and the events it skipped (files opened once:
        ``sources`` by path, added to as needed)."""
        opened = {} if sources is None else sources

        def simulate(chunk: Chunk) -> tuple[ak.Array, Counter[str]]:
            source = opened.get(str(chunk.path)) or opened.setdefault(str(chunk.path), open_source(chunk.path))
            events = from_branches(source.read(source.select(), chunk.start, chunk.stop))
            if settings.select is not None:
                events = events[_selected(events, settings.select, chunk.path)]
            skipped: Counter[str] = Counter()
            try:
                return self.process(events, seed=settings.seed, batch_size=settings.batch_size, keep_gen=settings.keep_gen,
                                    oversample=settings.oversample, skipped=skipped if settings.skip_bad else None), skipped
            except FlashsimError as exc:  # a bad value or field: say in which file and events
                raise type(exc)(f"{chunk.path} (entries {chunk.start}-{chunk.stop}): {exc}") from exc

        return simulate

    def process(self, chunk: ak.Array, seed: int, batch_size: int = 100_000, keep_gen: bool = False, oversample: int = 1,
                skipped: Counter[str] | None = None) -> ak.Array:
        """One GEN chunk -> output record: event ids, (GEN if kept), the chain's collections.

        Input collections that the chain produces (e.g. full-simulation ``Jet`` in a GEN+RECO file)
        are dropped first, so they never mix with flash output. An event with a non-finite or unphysical
        GEN value is an error, or, given a ``skipped`` counter, dropped and counted by branch.
        """
        self.check(chunk.fields)
        good, failed = bad_events(chunk, self.inputs, skip=skipped is not None, declared=self.input_ranges)
        if skipped is not None and failed:
            skipped.update(failed)
            chunk = chunk[good]
        chunk = chunk[[f for f in chunk.fields if f not in self.outputs]]
        if oversample > 1:
            chunk = chunk[np.repeat(np.arange(len(chunk)), oversample)]
            chunk = ak.with_field(chunk, ak.zip({
                "oversampleIndex": np.tile(np.arange(oversample, dtype=np.int32), len(chunk) // oversample),
                "weight": np.full(len(chunk), 1.0 / oversample, np.float32),
            }, depth_limit=1), "FlashSim")
        result = self._run_units(chunk, seed, batch_size)
        keep = [f for f in EVENT_ID_COLUMNS if f in result.fields]
        if keep_gen:
            keep += [f for f in chunk.fields if f not in keep and f.startswith(GEN_PREFIXES)]
        elif "FlashSim" in result.fields:
            keep.append("FlashSim")
        keep += self.outputs
        return result[keep]


@dataclass(frozen=True)
class _Settings:
    """What a chunk's simulation needs besides the units."""

    seed: int
    batch_size: int
    keep_gen: bool
    oversample: int
    select: frozenset[tuple[int, ...]] | None
    skip_bad: bool


def _unit_directory(unit: Unit) -> str:
    """Where a worker process loads a unit from."""
    if unit.spec.path is None:
        raise ChainError(f"unit {unit.name!r} was not loaded from a directory; run it with processes=1")
    return str(unit.spec.path.parent)


def _chunk_simulator(units: list[str], device: str, precision: str,
                     settings: _Settings) -> Callable[[Chunk], tuple[ak.Array, Counter[str]]]:
    """In a worker process: load the chain once, return its chunk simulator."""
    return Chain(units, device=device, precision=precision)._simulator(settings)


def _selected(chunk: ak.Array, wanted: frozenset[tuple[int, ...]], path: str | os.PathLike[str]) -> np.ndarray:
    """Mask of the events of a chunk whose (run, luminosityBlock, event) are wanted."""
    missing = [c for c in EVENT_ID_COLUMNS if c not in chunk.fields]
    if missing:
        raise InputError(f"{path}: selecting events needs {list(EVENT_ID_COLUMNS)}, the file lacks {missing}")
    ids = zip(*(ak.to_numpy(chunk[c]).tolist() for c in EVENT_ID_COLUMNS))
    return np.fromiter((i in wanted for i in ids), bool, count=len(chunk))


def _order(units: list[Unit]) -> list[Unit]:
    """Topological order: producers of a collection, then units merging into it (those drawing a source object's
    second object after the others), then its readers."""
    producers: dict[str, list[Unit]] = {}
    for unit in units:
        for coll in unit.spec.produces:
            producers.setdefault(coll, []).append(unit)
    deps: dict[str, set[str]] = {}
    for unit in units:
        needed: set[str] = set()
        for coll in unit.spec.inputs:
            for producer in producers.get(coll, []):
                if producer is unit:
                    continue
                if unit.spec.merge and coll == unit.spec.output and producer.spec.merge and _rank(producer) >= _rank(unit):
                    continue  # merging units of one collection in the given order; a match.rank k unit after the others
                needed.add(producer.name)
        deps[unit.name] = needed
    ordered: list[Unit] = []
    done: set[str] = set()
    pending = list(units)
    while pending:
        ready = [u for u in pending if deps[u.name] <= done]
        if not ready:
            cycle = ", ".join(f"{u.name} (needs {sorted(deps[u.name] - done)})" for u in pending)
            raise ChainError(f"units depend on each other in a cycle: {cycle}")
        for unit in ready:
            ordered.append(unit)
            done.add(unit.name)
            pending.remove(unit)
    return ordered


def _rank(unit: Unit) -> int:
    """The rank of the objects an object unit draws per source object (``match.rank``; 1 for every other unit)."""
    return unit.spec.match.rank if unit.spec.match is not None else 1


def _earlier_collections(spec: UnitSpec) -> list[tuple[str, str]]:
    """The collections a unit needs from earlier units of a chain, each with what the unit does with it."""
    out, written = spec.output, spec.hops[0][1] if spec.hops else ""
    needs = [(coll, f"writes {out}_{written}, which points into {coll!r} (through {coll}_{field})") for coll, field in spec.hops[1:]]
    if spec.link is not None:
        needs.append((spec.link.collection, f"links {out}_{spec.link.field} to the nearest {spec.link.collection} (link.collection)"))
    if spec.partner is not None:
        needs.append((spec.partner.collection, f"sets {out}_{spec.partner.field} to the {spec.partner.collection} of the same "
                                               f"{spec.source.collection} (partner.collection)"))
    if spec.match is not None and spec.match.rank > 1:
        needs.append((out, f"draws the {out} of rank {spec.match.rank} per {spec.source.collection} object (match.rank), "
                           f"after the {out} earlier units drew"))
    if spec.merge and any(out in features.collections_used(entry) for entry in spec.context):
        needs.append((out, f"reads the {out} earlier units drew in its context"))
    return needs
