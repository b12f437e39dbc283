"""``flashsim gen`` (generator input -> GEN NanoAOD) and ``flashsim simulate`` (generator input -> flash NanoAOD)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import typer

from flashsim.errors import OutputError

if TYPE_CHECKING:
    from flashsim.generators import GenSource

VERSION_HELP = "NanoAOD version of the branch names and types written: v7, v9, v12, v15"
INPUT_HELP = "Pythia8 card (.cmnd), LHE file (.lhe, .lhe.gz) or HepMC3 ASCII file (.hepmc, .hepmc3, optionally .gz)"


def _source(input: Path, output: Path, events: Optional[int], seed: int, pileup: float, run: int, lumi: int) -> GenSource:
    """The generator input as a GenSource, refusing an output that would replace it."""
    from flashsim.generators import GenSource

    if os.path.realpath(input) == os.path.realpath(output):
        raise OutputError(f"{output}: the output is also the input; writing it would replace the input")
    return GenSource(input, events=events, seed=seed, pileup=pileup, run=run, lumi=lumi)


def _summary(written: int, source: GenSource, output: Path, start: float) -> str:
    """One line: events written, from what, where, how fast, and dropped LHE showers if any."""
    elapsed = time.perf_counter() - start
    dropped = f"; {source.dropped:,} LHE events dropped (Pythia's shower failed)" if source.dropped else ""
    return f"wrote {written:,} events from {source.path} ({source.kind}) to {output} in {elapsed:.1f} s{dropped}"


def gen(
    input: Path = typer.Argument(..., help=INPUT_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="GEN NanoAOD file to write (.root or .parquet)"),
    events: Optional[int] = typer.Option(None, "--events", "-n", min=1, help="events to generate (card: default 1000) or read (default: all)"),
    seed: int = typer.Option(1, "--seed", min=0, help="Pythia and pileup seed (same seed -> same file)"),
    pileup: float = typer.Option(35.0, "--pileup", min=0.0, help="mean number of pileup interactions (Pileup_nTrueInt)"),
    run: int = typer.Option(1, "--run", min=0, help="run number of every event"),
    lumi: int = typer.Option(1, "--lumi", min=0, help="luminosityBlock of every event"),
    format: Optional[Literal["root", "parquet"]] = typer.Option(None, "--format", help="root | parquet (default: from the suffix)"),
    nano_version: str = typer.Option("v9", "--nano-version", help=VERSION_HELP),
) -> None:
    """Generator input -> GEN NanoAOD (GenPart, GenJet, GenMET, Pileup, genWeight; LHE branches for LHE input)."""
    from flashsim.io import NanoAODWriter

    start = time.perf_counter()
    source = _source(input, output, events, seed, pileup, run, lumi)
    with NanoAODWriter(output, format=format, version=nano_version) as writer:
        for chunk in source.chunks():
            writer.write(chunk)
    typer.echo(_summary(writer.num_events, source, output, start))


def simulate(
    input: Path = typer.Argument(..., help=INPUT_HELP),
    output: Path = typer.Option(..., "-o", "--output", help="flash NanoAOD file to write (.root or .parquet)"),
    chain: str = typer.Option("muon,jet,fakejet,met", "--chain", help="comma-separated units: names or directories"),
    keep_gen: bool = typer.Option(True, "--keep-gen/--no-keep-gen", help="write the GEN collections beside the flash ones"),
    events: Optional[int] = typer.Option(None, "--events", "-n", min=1, help="events to generate (card: default 1000) or read (default: all)"),
    seed: int = typer.Option(1, "--seed", min=0, help="seed of the generator, the pileup draw and the units"),
    pileup: float = typer.Option(35.0, "--pileup", min=0.0, help="mean number of pileup interactions (Pileup_nTrueInt)"),
    run: int = typer.Option(1, "--run", min=0, help="run number of every event"),
    lumi: int = typer.Option(1, "--lumi", min=0, help="luminosityBlock of every event"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|cuda:N"),
    format: Optional[Literal["root", "parquet"]] = typer.Option(None, "--format", help="root | parquet (default: from the suffix)"),
    nano_version: str = typer.Option("v9", "--nano-version", help=VERSION_HELP),
) -> None:
    """Generator input -> GEN -> a chain of units -> flash NanoAOD, chunk by chunk, in one command."""
    from flashsim.chain import Chain
    from flashsim.io import NanoAODWriter

    start = time.perf_counter()
    names = [name.strip() for name in chain.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter("give at least one unit, e.g. --chain muon,jet,fakejet,met", param_hint="'--chain'")
    source = _source(input, output, events, seed, pileup, run, lumi)
    units = Chain(names, device=device)
    with NanoAODWriter(output, format=format, version=nano_version) as writer:
        for chunk in source.chunks():
            writer.write(units.process(chunk, seed=seed, keep_gen=keep_gen))
    typer.echo(_summary(writer.num_events, source, output, start))
