"""``flashsim refsim``: Pythia8 + parametric detector -> paired GEN+RECO NanoAOD file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer


def refsim(
    process: str = typer.Option("wjets", "--process", "-p", help="wjets | ttbar | dy | zee | gjets | minbias"),
    events: int = typer.Option(10000, "--events", "-n", min=1, help="Number of events to generate."),
    pileup: float = typer.Option(35.0, "--pileup", min=0.0, help="Mean number of pileup interactions (nTrueInt)."),
    seed: int = typer.Option(1, "--seed", min=0, help="Random seed (same seed and workers -> identical file)."),
    sqrt_s: float = typer.Option(13600.0, "--sqrt-s", help="Centre-of-mass energy in GeV."),
    pthat_min: Optional[float] = typer.Option(None, "--pthat-min", help="Pythia PhaseSpace:pTHatMin (GeV)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output file (.root or .parquet)."),
    format: Optional[Literal["root", "parquet"]] = typer.Option(None, "--format", help="root | parquet (default: from the suffix)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Parallel generator processes."),
    gen_only: bool = typer.Option(False, "--gen-only", help="Write GEN collections only (no detector)."),
    params: Optional[Path] = typer.Option(None, "--params", help="TOML file overriding DetectorParams."),
    pileup_pool: Optional[int] = typer.Option(
        None, "--pileup-pool", min=1, help="Min-bias events in the sample's pileup pool (default 5,000; a 30k-event "
        "sample at pileup 35 overlays each ~210 times, so rare pileup objects such as muons are then few: 100,000 for those)."
    ),
    batch_size: int = typer.Option(250, "--batch-size", min=1, help="Events per chunk."),
    nano_version: str = typer.Option("v9", "--nano-version", help="NanoAOD version of the branches written: v7, v9, v12, "
                                     "v15 (names, types and only the branches that version has)"),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Where the min-bias pileup pool is cached (default $FLASHSIM_CACHE_DIR/refsim "
        "or ~/.cache/flashsim/refsim)."
    ),
) -> None:
    """Generate events with Pythia8, run the parametric detector, write NanoAOD branches."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from flashsim.io import NanoAODWriter

    from .core import generate
    from .detector import tagger_names
    from .params import DetectorParams
    from .pythia import PROCESSES

    if process not in PROCESSES:
        raise typer.BadParameter(f"unknown process {process!r}; choose from {', '.join(sorted(PROCESSES))}")
    det = DetectorParams.from_toml(params) if params is not None else DetectorParams()
    if pileup_pool is not None:
        det = det.replace(pu_pool_size=pileup_pool)
    columns = (
        TextColumn(f"refsim {process}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress, NanoAODWriter(output, format=format, version=nano_version, strict=True) as writer:
        task = progress.add_task("events", total=events)
        for chunk in generate(
            process,
            events,
            pileup=pileup,
            seed=seed,
            sqrt_s=sqrt_s,
            pthat_min=pthat_min,
            params=det,
            gen_only=gen_only,
            workers=workers,
            batch_size=batch_size,
            cache_dir=cache_dir,
        ):
            writer.write(tagger_names(chunk, writer.version.run))
            progress.advance(task, len(chunk))
    typer.echo(f"wrote {writer.num_events} events to {output} (NanoAOD {writer.version})")
