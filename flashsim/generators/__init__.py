"""GEN NanoAOD from any generator: a Pythia8 card, an LHE file showered by Pythia8, or showered HepMC3 events.

Every kind becomes refsim's flat particle record (:class:`~flashsim.refsim.pythia.FlatEvents`) and goes through
refsim's GEN builder, so GenPart, GenJet (with flavours), GenMET and Pileup come out as in a refsim file; with ``reco=True`` the full
particle record of each event also goes through refsim's detector, giving refsim's paired GEN+RECO::

    from flashsim.generators import GenSource
    source = GenSource("events.hepmc3.gz", pileup=35, seed=1)
    for chunk in source.chunks(jobs=4):
        chunk.GenPart.pt, chunk.GenJet.hadronFlavour, chunk.event

The events are made in blocks of ``batch_size``: block by block, Pythia's random generator and the pileup draw are
seeded from (seed, first event of the block), and so is the detector, which draws from the pileup's stream after
it (as refsim's workers do), so a block comes out the same whichever process makes it and the output does not
depend on ``jobs``. An LHE file whose run card asks for MLM or FxFx matching is showered with
Pythia's jet matching (:mod:`flashsim.generators.matching`); vetoed events are not written and are counted.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Literal

import awkward as ak
import numpy as np

from flashsim.errors import ConfigError, InputError
from flashsim.files import file_digest
from flashsim.processes import Chunk, run_in_processes
from flashsim.refsim.core import DEFAULT_BATCH_SIZE, DEFAULT_SQRT_S, paired_events, pileup_pool
from flashsim.refsim.params import DetectorParams
from flashsim.refsim.pileup import PileupPool
from flashsim.refsim.pythia import FlatEvents, Generator, check_settings, pythia_seed, quiet_stdout

from .matching import Matching

__all__ = ["DEFAULT_CARD_EVENTS", "GenSource", "default_lumi", "input_kind", "read_card"]

Kind = Literal["card", "lhe", "hepmc"]
SUFFIXES: dict[str, Kind] = {
    ".cmnd": "card", ".lhe": "lhe", ".lhe.gz": "lhe",
    ".hepmc": "hepmc", ".hepmc3": "hepmc", ".hepmc.gz": "hepmc", ".hepmc3.gz": "hepmc",
}
DEFAULT_CARD_EVENTS = 1000
MAX_LUMI = 2**31 - 1


def input_kind(path: str | os.PathLike[str]) -> Kind:
    """The kind of generator input from the file name's suffix."""
    name = Path(path).name.lower()
    for suffix, kind in sorted(SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return kind
    raise InputError(f"{path}: unknown generator input; expected one of {', '.join(SUFFIXES)}")


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


def _card_settings(path: Path) -> list[tuple[str, str]]:
    """flashsim's default beam energy, then the card's settings."""
    return [("default", f"Beams:eCM = {DEFAULT_SQRT_S}")] + read_card(path)


def default_lumi(path: str | os.PathLike[str], seed: int) -> int:
    """The luminosityBlock of a file's events when none is given: 1 .. 2**31 - 1 from the seed and the file's content,
    so that samples made from other files or with other seeds never share (run, luminosityBlock, event), the key of
    the flash random numbers."""
    digest = hashlib.sha256(f"{int(seed)}:{file_digest(Path(path))}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % MAX_LUMI + 1


@dataclass(frozen=True)
class _Spec:
    """What a process needs to make any block of a source's events (sent to each worker once)."""

    path: str
    kind: Kind
    seed: int
    pileup: float
    run: int
    lumi: int
    params: DetectorParams
    total: int  # events to make (card) or read (LHE, HepMC3)
    to_the_end: bool  # the last block reads the file to its end (checks that it is whole)
    matching: Matching | None
    reco: bool  # the detector runs on each event's particles
    pool: PileupPool | None  # the min-bias events overlaid by the detector (reco with pileup only)


@dataclass
class _Block:
    """One block's events (None when none was kept), and the LHE events it dropped (failed shower) and vetoed (matching)."""

    events: ak.Array | None
    dropped: int = 0
    vetoed: int = 0


class GenSource:
    """GEN NanoAOD chunks (+ refsim's RECO with ``reco``) from one generator input; after :meth:`chunks`,
    ``dropped`` counts LHE events whose shower failed in Pythia and ``vetoed`` those the jet matching vetoed
    (neither is written). With ``reco``, the min-bias pool of ``seed`` is cached in ``cache_dir`` as refsim's."""

    def __init__(self, path: str | os.PathLike[str], events: int | None = None, seed: int = 1, pileup: float = 35.0,
                 run: int = 1, lumi: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 params: DetectorParams | None = None, q_cut: float | None = None, n_jet_max: int | None = None,
                 reco: bool = False, cache_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.kind = input_kind(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        self.events, self.seed, self.pileup = events, int(seed), float(pileup)
        self.run, self.batch_size = int(run), max(int(batch_size), 1)
        self.lumi = default_lumi(self.path, self.seed) if lumi is None else int(lumi)
        self.params = params or DetectorParams()
        self.q_cut, self.n_jet_max = q_cut, n_jet_max
        self.reco, self.cache_dir = bool(reco), cache_dir
        self.dropped = self.vetoed = 0

    @cached_property
    def matching(self) -> Matching | None:
        """The jet matching an LHE file's run card asks for (None: none, or not LHE); reads the header."""
        if self.kind != "lhe":
            if self.q_cut is not None or self.n_jet_max is not None:
                raise ConfigError(f"{self.path}: --qcut/--njetmax apply to LHE files only")
            return None
        from .lhe import LHEHeader, read_lhe
        from .matching import matching_of

        header = LHEHeader()
        events = read_lhe(self.path, header)
        next(events)  # reads the header; a file without <init> or events fails here
        events.close()
        return matching_of(header, self.path, self.q_cut, self.n_jet_max)

    @cached_property
    def pool(self) -> PileupPool | None:
        """The min-bias pool the detector overlays (None: no ``reco`` or no pileup), as ``flashsim refsim --seed``'s."""
        if not self.reco:
            return None
        return pileup_pool(self.params, self.pileup, self.seed, DEFAULT_SQRT_S, self.cache_dir)

    @cached_property
    def total(self) -> int:
        """Events to make (card) or to read from the file (LHE, HepMC3: vetoed and dropped ones included)."""
        if self.kind == "card":
            check_settings(_card_settings(self.path), InputError)  # a bad card fails here, before any worker starts
            return DEFAULT_CARD_EVENTS if self.events is None else self.events
        from . import hepmc, lhe

        self.matching  # noqa: B018  (an LHE file's header is checked before its events are counted)
        found = (lhe.count_events if self.kind == "lhe" else hepmc.count_events)(self.path)
        if found == 0:
            raise InputError(f"{self.path}: holds no events")
        return found if self.events is None else min(found, self.events)

    def blocks(self) -> list[Chunk]:
        """The blocks of events, in order: ``batch_size`` events each (the last one shorter)."""
        return [Chunk(str(self.path), start, min(start + self.batch_size, self.total))
                for start in range(0, self.total, self.batch_size)]

    def chunks(self, jobs: int = 1, progress: Callable[[int], None] | None = None) -> Iterator[ak.Array]:
        """Yield event records (event ids, genWeight, Pileup, GenMET, GenJet, GenPart; LHE branches for LHE input;
        refsim's Jet, Muon, Electron, Photon, MET, fixedGridRhoFastjetAll and PV_npvs with ``reco``), one per block, in
        order, made by ``jobs`` processes; ``progress(n)`` after each block of ``n`` events."""
        blocks = self.blocks()
        spec = _Spec(str(self.path), self.kind, self.seed, self.pileup, self.run, self.lumi, self.params, self.total,
                     self.events is None or self.events > self.total, self.matching, self.reco, self.pool)
        jobs = max(1, min(int(jobs), len(blocks)))
        local = _Blocks(spec) if jobs == 1 else None  # worker processes end without running destructors
        made: Iterator[_Block] = map(local, blocks) if local else run_in_processes(partial(_Blocks, spec), blocks, jobs)
        try:
            for chunk, block in zip(blocks, made):
                self.dropped += block.dropped
                self.vetoed += block.vetoed
                if progress is not None:
                    progress(chunk.stop - chunk.start)
                if block.events is not None:
                    yield block.events
        finally:
            if local:
                local.close()


class _Blocks:
    """Makes blocks of one source's events in one process: a Pythia instance (card, LHE) or a reader (HepMC3, LHE)
    kept between blocks, moved forward to each block's first event, and re-seeded for each block."""

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.path = Path(spec.path)
        self.position = 0  # events of the file read so far (LHE, HepMC3)
        self.events: Iterator[Any] | None = None  # LHE
        self.text: Any = None  # HepMC3: the file's HepMCBlocks
        self.gen: Generator | None = None
        self.hook: Any = None
        self.header: Any = None

    def __call__(self, chunk: Chunk) -> _Block:
        return getattr(self, f"_{self.spec.kind}")(chunk)

    def close(self) -> None:
        """Free Pythia and the matching hook, silently (the hook prints its message statistics as it goes)."""
        with quiet_stdout():
            self.gen = self.hook = None
        if self.text is not None:
            self.text.close()
            self.text = None

    def _record(self, flat: FlatEvents, numbers: np.ndarray, first: int, extra: dict | None = None) -> ak.Array:
        """Event ids + refsim's GEN collections (+ ``extra``, + RECO) of one block; the pileup draw and then the
        detector seeded by the block."""
        n = len(numbers)
        ids: dict[str, np.ndarray] = {"run": np.full(n, self.spec.run, np.uint32),
                                      "luminosityBlock": np.full(n, self.spec.lumi, np.uint32),
                                      "event": np.asarray(numbers, np.uint64)}
        rng = np.random.default_rng(np.random.SeedSequence([self.spec.seed, first, 2]))
        return paired_events(flat, self.spec.params, self.spec.pileup, rng, self.spec.pool, ids, self.spec.reco, extra)

    def _start_pythia(self, settings: list[tuple[str, str]], failed: str, hooks: Any = None) -> Generator:
        seeds = [("--seed", "Random:setSeed = on"), ("--seed", f"Random:seed = {pythia_seed(self.spec.seed, 0, 1)}")]
        return Generator.from_settings(self.path.name, settings + seeds, failed, hooks)

    def _reseed(self, first: int) -> None:
        assert self.gen is not None
        self.gen.pythia.rndm.init(pythia_seed(self.spec.seed, first, 1))

    def _card(self, chunk: Chunk) -> _Block:
        if self.gen is None:
            self.gen = self._start_pythia(_card_settings(self.path),
                                          f"{self.path}: Pythia initialisation failed (is a process switched on? "
                                          "are the settings consistent?)")
        self._reseed(chunk.start)
        flat = self.gen.batch(chunk.stop - chunk.start)
        return _Block(self._record(flat, np.arange(chunk.start + 1, chunk.stop + 1), chunk.start))

    def _skip_to(self, chunk: Chunk, open_file: Callable[[], Iterator[Any]]) -> list[Any]:
        """The LHE file's events of ``chunk`` (the reader opened again if it is past the chunk's start)."""
        if self.events is None or chunk.start < self.position:
            self.events, self.position = open_file(), 0
            self.close()  # Pythia starts again from the file's first event
        skip = chunk.start - self.position
        for _ in itertools.islice(self.events, skip):
            pass
        items = list(itertools.islice(self.events, chunk.stop - chunk.start))
        if len(items) < chunk.stop - chunk.start:
            raise InputError(f"{self.path}: holds {chunk.start + len(items)} events, fewer than counted")
        self.position = chunk.stop
        if chunk.stop == self.spec.total and self.spec.to_the_end:
            for _ in self.events:  # reads to the end: a truncated file fails here
                pass
        return items

    def _lhe(self, chunk: Chunk) -> _Block:
        from .lhe import LHEHeader, lhe_collections, read_lhe
        from .matching import matching_hook

        def open_file() -> Iterator[Any]:
            self.header = LHEHeader()
            return read_lhe(self.path, self.header)

        before = self.position
        batch = self._skip_to(chunk, open_file)
        if self.gen is None:
            matching = self.spec.matching
            self.hook = matching_hook() if matching else None
            settings = [("LHE", "Beams:frameType = 4"), ("LHE", f"Beams:LHEF = {self.path}")]
            self.gen = self._start_pythia(settings + (matching.settings() if matching else []),
                                          f"{self.path}: Pythia cannot initialise from this LHE file"
                                          + (f" with {matching.describe()}" if matching else ""), self.hook)
            before = 0
        skip = chunk.start - before
        if skip and not self.gen.pythia.LHAeventSkip(skip):
            raise InputError(f"{self.path}: Pythia reached the end of the file before event {chunk.start + 1}, which "
                             "flashsim read: the file is not one Pythia can read")
        self._reseed(chunk.start)
        vetoes = self.hook.vetoes if self.hook is not None else 0
        flat, ok = self.gen.attempts(len(batch))
        if not ok.all() and self.gen.pythia.infoPython().atEndOfFile():
            raise InputError(f"{self.path}: Pythia reached the end of the file before event {chunk.start + int(np.argmin(ok)) + 1}, "
                             "which flashsim read: the file is not one Pythia can read")
        vetoed = self.hook.vetoes - vetoes if self.hook is not None else 0
        block = _Block(None, int((~ok).sum()) - vetoed, vetoed)
        if flat is not None:
            kept = [e for e, good in zip(batch, ok) if good]
            flat.weight = np.array([e.xwgtup for e in kept], np.float64)  # genWeight = the LHE event weight, as CMS
            numbers = np.arange(chunk.start + 1, chunk.stop + 1)[ok]
            block.events = self._record(flat, numbers, chunk.start, lhe_collections(kept, self.header))
        return block

    def _hepmc(self, chunk: Chunk) -> _Block:
        from .hepmc import HepMCBlocks, batch_of, event_record, hepmc_events

        if self.text is None or chunk.start < self.text.index:
            self.text = HepMCBlocks(self.path)
        events = list(hepmc_events(self.path, self.text.block(chunk.start, chunk.stop), chunk.start))
        if len(events) < chunk.stop - chunk.start:
            raise InputError(f"{self.path}: holds {chunk.start + len(events)} events, fewer than counted")
        batch = batch_of([event_record(e, self.path, n) for n, e in enumerate(events, chunk.start + 1)])
        return _Block(self._record(batch.events, batch.numbers, chunk.start))
