"""GEN NanoAOD from any generator: a Pythia8 card, an LHE file showered by Pythia8, or showered HepMC3 events.

Every kind becomes refsim's flat particle record (:class:`~flashsim.refsim.pythia.FlatEvents`) and goes through
refsim's GEN builder, so GenPart, GenJet (with flavours), GenMET and Pileup come out as in a refsim file::

    from flashsim.generators import GenSource
    source = GenSource("events.hepmc3.gz", pileup=35, seed=1)
    for chunk in source.chunks():
        chunk.GenPart.pt, chunk.GenJet.hadronFlavour, chunk.event
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypeVar

import awkward as ak
import numpy as np

from flashsim.errors import InputError
from flashsim.refsim.core import DEFAULT_SQRT_S, assemble_events, gen_collections
from flashsim.refsim.params import DetectorParams
from flashsim.refsim.pythia import FlatEvents, Generator, pythia_seed

__all__ = ["DEFAULT_CARD_EVENTS", "GenSource", "input_kind", "read_card"]

Kind = Literal["card", "lhe", "hepmc"]
SUFFIXES: dict[str, Kind] = {
    ".cmnd": "card", ".lhe": "lhe", ".lhe.gz": "lhe",
    ".hepmc": "hepmc", ".hepmc3": "hepmc", ".hepmc.gz": "hepmc", ".hepmc3.gz": "hepmc",
}
DEFAULT_CARD_EVENTS = 1000
T = TypeVar("T")


def input_kind(path: str | os.PathLike[str]) -> Kind:
    """The kind of generator input from the file name's suffix."""
    name = Path(path).name.lower()
    for suffix, kind in sorted(SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise InputError(f"{path}: unknown generator input; expected one of {', '.join(SUFFIXES)}")


def _batched(items: Iterator[T], n: int) -> Iterator[list[T]]:
    """Lists of ``n`` consecutive items (the last one shorter); itertools.batched before Python 3.12."""
    while batch := list(itertools.islice(items, n)):
        yield batch


def read_card(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """A Pythia8 settings card as (file:line, setting) pairs; comments (lines not starting with a letter) skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text file ({exc})") from exc
    settings = [(f"{path}:{k}", line.strip()) for k, line in enumerate(lines, 1) if line.strip()[:1].isalnum()]
    if not settings:
        raise InputError(f"{path}: holds no Pythia settings")
    return settings


class GenSource:
    """GEN NanoAOD chunks from one generator input; ``dropped`` counts LHE events whose shower failed in Pythia."""

    def __init__(self, path: str | os.PathLike[str], events: int | None = None, seed: int = 1, pileup: float = 35.0,
                 run: int = 1, lumi: int = 1, batch_size: int = 500, params: DetectorParams | None = None) -> None:
        self.path = Path(path)
        self.kind = input_kind(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        self.events, self.seed, self.pileup = events, int(seed), float(pileup)
        self.run, self.lumi, self.batch_size = int(run), int(lumi), max(int(batch_size), 1)
        self.params = params or DetectorParams()
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, 2]))  # as refsim's first worker
        self.dropped = 0

    def chunks(self) -> Iterator[ak.Array]:
        """Yield event records (event ids, genWeight, Pileup, GenMET, GenJet, GenPart; LHE branches for LHE input)."""
        if self.kind == "card":
            yield from self._card_chunks()
        elif self.kind == "lhe":
            yield from self._lhe_chunks()
        else:
            yield from self._hepmc_chunks()

    def _record(self, flat: FlatEvents, numbers: np.ndarray, extra: dict | None = None) -> ak.Array:
        """Event ids + refsim's GEN collections (+ ``extra``) of one batch."""
        n = len(numbers)
        ids: dict[str, np.ndarray] = {"run": np.full(n, self.run, np.uint32), "luminosityBlock": np.full(n, self.lumi, np.uint32),
               "event": np.asarray(numbers, np.uint64)}
        return assemble_events(gen_collections(flat, self.params, self.pileup, self.rng), None, ids, extra)

    def _seed_settings(self) -> list[tuple[str, str]]:
        return [("--seed", "Random:setSeed = on"), ("--seed", f"Random:seed = {pythia_seed(self.seed, 0, 1)}")]

    def _card_chunks(self) -> Iterator[ak.Array]:
        settings = [("default", f"Beams:eCM = {DEFAULT_SQRT_S}")] + read_card(self.path) + self._seed_settings()
        gen = Generator.from_settings(self.path.name, settings,
                                      f"{self.path}: Pythia initialisation failed (is a process switched on? are the settings consistent?)")
        total = DEFAULT_CARD_EVENTS if self.events is None else self.events
        for first in range(0, total, self.batch_size):
            n = min(self.batch_size, total - first)
            yield self._record(gen.batch(n), np.arange(first + 1, first + n + 1))

    def _lhe_chunks(self) -> Iterator[ak.Array]:
        from .lhe import LHEHeader, check_matching, lhe_collections, read_lhe

        header = LHEHeader()
        events = read_lhe(self.path, header, self.events)
        first = next(events)  # reads the header; a file without events fails here
        check_matching(header, self.path)
        gen = Generator.from_settings(self.path.name, [("LHE", "Beams:frameType = 4"), ("LHE", f"Beams:LHEF = {self.path}")]
                                      + self._seed_settings(), f"{self.path}: Pythia cannot initialise from this LHE file")
        done = 0
        for batch in _batched(itertools.chain([first], events), self.batch_size):
            flat, ok = gen.attempts(len(batch))
            if not ok.all() and gen.pythia.infoPython().atEndOfFile():
                raise InputError(f"{self.path}: Pythia reached the end of the file before event {done + int(np.argmin(ok)) + 1}, "
                                 "which flashsim read: the file is not one Pythia can read")
            numbers = np.arange(done + 1, done + len(batch) + 1)[ok]
            done += len(batch)
            self.dropped += int((~ok).sum())
            if not ok.any():
                continue
            kept = [e for e, good in zip(batch, ok) if good]
            flat.weight = np.array([e.xwgtup for e in kept], np.float64)  # genWeight = the LHE event weight, as CMS
            yield self._record(flat, numbers, lhe_collections(kept, header))

    def _hepmc_chunks(self) -> Iterator[ak.Array]:
        from .hepmc import read_hepmc

        for batch in read_hepmc(self.path, self.batch_size, self.events):
            yield self._record(batch.events, batch.numbers)
