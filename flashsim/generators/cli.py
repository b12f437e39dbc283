"""``flashsim gen`` (generator input -> GEN NanoAOD) and ``flashsim simulate`` (generator input -> flash NanoAOD)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import typer

from flashsim.locations import DEFAULT_CHAIN
from flashsim.errors import ConfigError, OutputError

if TYPE_CHECKING:
    import awkward as ak

    from flashsim.generators import GenSource

VERSION_HELP = "NanoAOD version of the branch names and types written: v7, v9, v12, v15"
INPUT_HELP = "Pythia8 card (.cmnd), LHE file (.lhe, .lhe.gz) or HepMC3 ASCII file (.hepmc, .hepmc3, optionally .gz)"
LUMI_HELP = ("luminosityBlock of every event (default: a number from --seed and the input file's content, so that "
             "samples from other files or seeds never share event ids; give each job its own, as CMS does)")
JOBS_HELP = "processes generating events (default: every core, one per block of events); the output does not depend on it"
QCUT_HELP = "LHE with MLM/FxFx matching: the merging scale qCut in GeV (default MLM: 1.5 x the run card's xqcut)"
NJETMAX_HELP = "LHE with MLM/FxFx matching: nJetMax (default: the highest jet multiplicity in the file)"
RECO_HELP = ("also run refsim's detector on every event's particles and write its RECO (Jet, Muon, Electron, Photon, "
             "MET, ...) beside the GEN, as flashsim refsim does: a paired GEN+RECO sample for training")


def _source(input: Path, output: Path, events: Optional[int], seed: int, pileup: float, run: int, lumi: Optional[int],
            qcut: Optional[float], njetmax: Optional[int], reco: bool = False, params: Optional[Path] = None,
            cache_dir: Optional[Path] = None) -> GenSource:
    """The generator input as a GenSource, refusing an output that would replace it and detector options without
    ``--reco``."""
    from flashsim.generators import GenSource
    from flashsim.refsim.params import DetectorParams

    if os.path.realpath(input) == os.path.realpath(output):
        raise OutputError(f"{output}: the output is also the input; writing it would replace the input")
    for option, value in (("--params", params), ("--cache-dir", cache_dir)):
        if value is not None and not reco:
            raise ConfigError(f"{option} {value}: applies to the detector, which runs with --reco only")
    det = DetectorParams.from_toml(params) if params is not None else None
    return GenSource(input, events=events, seed=seed, pileup=pileup, run=run, lumi=lumi, q_cut=qcut, n_jet_max=njetmax,
                     params=det, reco=reco, cache_dir=cache_dir)


def _chunks(source: GenSource, jobs: Optional[int], what: str) -> Iterator[ak.Array]:
    """The source's chunks made by ``jobs`` processes (default: every core), under a progress bar of events."""
    from flashsim.cli import _progress, console
    from flashsim.processes import available_cores

    total = source.total  # reads the file's header and counts its events: a bad file fails before the bar
    source.pool  # noqa: B018  (--reco: the min-bias pool is loaded, or made once and cached, before the bar)
    processes = jobs or min(available_cores(), len(source.blocks()))
    if source.matching is not None:
        console.print(f"{source.path}: {source.matching.describe()}", soft_wrap=True)
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task(what, total=total, rate=f"{processes} process(es)")

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[task].completed
            bar.update(task, rate=f"{processes} process(es) {done / (time.perf_counter() - start):,.0f} ev/s")

        yield from source.chunks(jobs=processes, progress=advance)


def _summary(written: int, source: GenSource, output: Path, start: float) -> str:
    """One line: events written, from what, where, with which event ids, how fast, and LHE events not written."""
    elapsed = time.perf_counter() - start
    lost = [f"{source.vetoed:,} vetoed by the jet matching"] if source.matching is not None else []
    lost += [f"{source.dropped:,} dropped (Pythia's shower failed)"] if source.dropped else []
    lhe = f"; LHE events not written: {', '.join(lost)}" if lost else ""
    return (f"wrote {written:,} events from {source.path} ({source.kind}) to {output} in {elapsed:.1f} s "
            f"(run {source.run}, luminosityBlock {source.lumi}){lhe}")


def _write(source: GenSource, output: Path, format: Optional[str], nano_version: str, jobs: Optional[int], what: str,
           flash: Callable[[ak.Array], ak.Array] | None = None) -> None:
    """Write the source's chunks (through ``flash`` if given) to one file, atomically, and echo the summary; with
    ``--reco`` the RECO is written as ``flashsim refsim`` writes it (its tagger names, only the version's branches)."""
    from flashsim.io import NanoAODWriter
    from flashsim.refsim.detector import tagger_names

    start = time.perf_counter()
    with NanoAODWriter(output, format=format, version=nano_version, strict=source.reco) as writer:
        for chunk in _chunks(source, jobs, what):
            if source.reco:
                chunk = tagger_names(chunk, writer.version.run)
            writer.write(chunk if flash is None else flash(chunk))
    typer.echo(_summary(writer.num_events, source, output, start))


def gen(
    input: Path = typer.Argument(..., help=INPUT_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="GEN NanoAOD file to write (.root or .parquet)"),
    events: Optional[int] = typer.Option(None, "--events", "-n", min=1, help="events to generate (card: default 1000) or read (default: all)"),
    seed: int = typer.Option(1, "--seed", min=0, help="Pythia, pileup and detector seed (same seed -> same file)"),
    pileup: float = typer.Option(35.0, "--pileup", min=0.0, help="mean number of pileup interactions (Pileup_nTrueInt)"),
    run: int = typer.Option(1, "--run", min=0, help="run number of every event"),
    lumi: Optional[int] = typer.Option(None, "--lumi", min=1, help=LUMI_HELP),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help=JOBS_HELP),
    qcut: Optional[float] = typer.Option(None, "--qcut", min=0.0, help=QCUT_HELP),
    njetmax: Optional[int] = typer.Option(None, "--njetmax", min=0, help=NJETMAX_HELP),
    format: Optional[Literal["root", "parquet"]] = typer.Option(None, "--format", help="root | parquet (default: from the suffix)"),
    nano_version: str = typer.Option("v9", "--nano-version", help=VERSION_HELP),
    reco: bool = typer.Option(False, "--reco", help=RECO_HELP),
    params: Optional[Path] = typer.Option(None, "--params", help="--reco: TOML file overriding DetectorParams"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="--reco: where the min-bias pileup pool is cached (default as flashsim refsim's)"),
) -> None:
    """Generator input -> GEN NanoAOD (GenPart, GenJet, GenMET, Pileup, genWeight; LHE branches for LHE input), with
    --reco also refsim's detector RECO (paired GEN+RECO)."""
    source = _source(input, output, events, seed, pileup, run, lumi, qcut, njetmax, reco, params, cache_dir)
    _write(source, output, format, nano_version, jobs, "gen")


def simulate(
    input: Path = typer.Argument(..., help=INPUT_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="flash NanoAOD file to write (.root or .parquet)"),
    chain: str = typer.Option(",".join(DEFAULT_CHAIN), "--chain", help="comma-separated units: names or directories"),
    keep_gen: bool = typer.Option(True, "--keep-gen/--no-keep-gen", help="write the GEN collections beside the flash ones"),
    events: Optional[int] = typer.Option(None, "--events", "-n", min=1, help="events to generate (card: default 1000) or read (default: all)"),
    seed: int = typer.Option(1, "--seed", min=0, help="seed of the generator, the pileup draw and the units"),
    pileup: float = typer.Option(35.0, "--pileup", min=0.0, help="mean number of pileup interactions (Pileup_nTrueInt)"),
    run: int = typer.Option(1, "--run", min=0, help="run number of every event"),
    lumi: Optional[int] = typer.Option(None, "--lumi", min=1, help=LUMI_HELP),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help=JOBS_HELP + " (the units run in the main process)"),
    qcut: Optional[float] = typer.Option(None, "--qcut", min=0.0, help=QCUT_HELP),
    njetmax: Optional[int] = typer.Option(None, "--njetmax", min=0, help=NJETMAX_HELP),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N"),
    precision: Literal["float32", "bfloat16"] = typer.Option(
        "float32", "--precision", help="the precision of the coupling flows' conditioner networks (see flashsim generate --help)"),
    format: Optional[Literal["root", "parquet"]] = typer.Option(None, "--format", help="root | parquet (default: from the suffix)"),
    nano_version: str = typer.Option("v9", "--nano-version", help=VERSION_HELP),
) -> None:
    """Generator input -> GEN -> a chain of units -> flash NanoAOD, block by block, in one command."""
    from flashsim.chain import Chain

    names = [name.strip() for name in chain.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(f"give at least one unit, e.g. --chain {','.join(DEFAULT_CHAIN)}", param_hint="'--chain'")
    source = _source(input, output, events, seed, pileup, run, lumi, qcut, njetmax)
    units = Chain(names, device=device, precision=precision)
    _write(source, output, format, nano_version, jobs, "simulate", lambda chunk: units.process(chunk, seed=seed, keep_gen=keep_gen))
