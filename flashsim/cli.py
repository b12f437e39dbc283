"""The ``flashsim`` command: refsim, dataset, train, generate, validate, units."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flashsim.errors import FlashsimError

app = typer.Typer(help="flashsim: machine-learning fast simulation of LHC events (GEN -> NANOAOD-like RECO).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(code=1)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def _scale_out_options(output: Optional[Path], output_dir: Optional[Path], workers: Optional[int],
                       scheduler: Optional[str], merge: bool, input: list[str], fileset: Optional[Path]) -> None:
    """Check the combination of single-file and partitioned (--output-dir) options."""
    if (output is None) == (output_dir is None):
        raise typer.BadParameter("give exactly one of --output (one file) or --output-dir (one file per partition)")
    if output is not None and (workers or scheduler or merge or fileset):
        raise typer.BadParameter("--workers, --scheduler, --merge and --fileset need --output-dir")
    if workers and scheduler:
        raise typer.BadParameter("give --workers (start a local cluster) or --scheduler (use one), not both")
    if bool(input) == (fileset is not None):
        raise typer.BadParameter("give --input or --fileset (one of them)")


def _run_partitioned(run: Callable[..., Any], fileset: Optional[Path], input: list[str], workers: Optional[int],
                     scheduler: Optional[str], merge: bool, what: str) -> None:
    """Run ``run(inputs, client, progress)`` over partitions with one progress bar; list failures and exit 1."""
    import time

    from flashsim.distributed import PartitionsFailed, cluster, load_fileset, merge_outputs

    inputs = load_fileset(fileset) if fileset is not None else input
    start = time.perf_counter()
    with cluster(workers, scheduler, log=console.print) as client, _progress() as bar:
        task = bar.add_task(what, total=0, rate="scanning inputs")
        first: list[float] = []  # time and events at the first report (after the input scan and resume check)

        def progress(done: int, partitions: int, events: int, total: int) -> None:
            first.extend([] if first else [time.perf_counter(), events])
            rate = (events - first[1]) / max(time.perf_counter() - first[0], 1e-9)
            bar.update(task, completed=events, total=total, rate=f"{done}/{partitions} partitions {rate:,.0f} ev/s")

        try:
            manifest = run(inputs, client, progress)
        except PartitionsFailed as exc:
            bar.stop()
            console.print(f"[bold red]error:[/] {exc}\nmanifest (incomplete): {exc.manifest.path}")
            raise typer.Exit(code=1) from exc
    elapsed = time.perf_counter() - start
    r = manifest.run
    console.print(f"{manifest.events:,} events in {r['partitions']} partitions ({r['ran']} run, {r['skipped']} already done) "
                  f"in {elapsed:.1f} s; manifest {manifest.path}")
    if merge:
        for path in merge_outputs(manifest.path):
            console.print(f"merged {path}")


@app.command()
def generate(
    chain: str = typer.Option(..., "--chain", help="comma-separated units: names ($FLASHSIM_UNITS, then the zoo) or directories"),
    input: list[str] = typer.Option([], "--input", "-i", help="GEN NanoAOD file(s) or glob(s), ROOT or Parquet"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="output file (.root or .parquet)"),
    format: Optional[str] = typer.Option(None, "--format", help="root|parquet (default: from the suffix; root with --output-dir)"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda"),
    batch_size: int = typer.Option(100_000, "--batch-size", help="objects per model call"),
    step_size: int = typer.Option(50_000, "--step-size", help="events per chunk read (bounds memory)"),
    seed: int = typer.Option(0, "--seed"),
    keep_gen: bool = typer.Option(False, "--keep-gen", help="copy the input GEN collections to the output"),
    oversample: int = typer.Option(1, "--oversample", help="simulate each GEN event N times (weight 1/N)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="one file per partition + manifest.json (rerun resumes)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="start a local dask cluster of N worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="use an existing dask scheduler (tcp://host:8786)"),
    partition_size: int = typer.Option(50_000, "--partition-size", help="events per partition (task) with --output-dir"),
    fileset: Optional[Path] = typer.Option(None, "--fileset", help='coffea-style fileset JSON {"dataset": {"files": {path: tree}}}'),
    merge: bool = typer.Option(False, "--merge", help="also write one file per dataset, partitions in order"),
    threads: int = typer.Option(1, "--threads", help="torch threads per partition task (part of what fixes the numbers)"),
) -> None:
    """Run a chain of units on GEN events and write NANOAOD-like output."""
    import time

    from flashsim.chain import Chain
    from flashsim.io import open_source, resolve_inputs

    _scale_out_options(output, output_dir, workers, scheduler, merge, input, fileset)
    names = [name.strip() for name in chain.split(",") if name.strip()]
    try:
        if output_dir is not None:
            from flashsim.distributed import generate_partitions

            _run_partitioned(lambda inputs, client, progress: generate_partitions(
                names, inputs, output_dir, client=client, seed=seed, partition_size=partition_size, format=format or "root",
                keep_gen=keep_gen, oversample=oversample, device=device, batch_size=batch_size, threads=threads,
                progress=progress),
                fileset, input, workers, scheduler, merge, "generate")
            return
        units = Chain(names, device=device)
        files = resolve_inputs(input)
        total = sum(open_source(f).num_entries for f in files)
        console.print(f"chain {units} on {units.device}, {total:,} events from {len(files)} file(s)")
        start = time.perf_counter()
        with _progress() as bar:
            task = bar.add_task("generate", total=total * oversample, rate="")

            def advance(n: int) -> None:
                bar.advance(task, n * oversample)
                done = bar.tasks[task].completed
                bar.update(task, rate=f"{done / (time.perf_counter() - start):,.0f} ev/s")

            written = units.generate(files, output, format=format, seed=seed, step_size=step_size, batch_size=batch_size,
                                     keep_gen=keep_gen, oversample=oversample, progress=advance)
        elapsed = time.perf_counter() - start
        console.print(f"wrote {written:,} events to {output} in {elapsed:.1f} s ({written / elapsed:,.0f} events/s)")
    except FlashsimError as exc:
        raise _fail(exc) from exc


@app.command()
def dataset(
    unit: str = typer.Argument(..., help="unit name ($FLASHSIM_UNITS, then the zoo) or directory"),
    input: list[str] = typer.Option([], "--input", "-i", help="NanoAOD file(s) or glob(s) with GEN and RECO"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Parquet table to write"),
    max_events: Optional[int] = typer.Option(None, "--max-events"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="one table per partition + manifest.json (rerun resumes)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="start a local dask cluster of N worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="use an existing dask scheduler (tcp://host:8786)"),
    partition_size: int = typer.Option(50_000, "--partition-size", help="events per partition (task) with --output-dir"),
    fileset: Optional[Path] = typer.Option(None, "--fileset", help='coffea-style fileset JSON {"dataset": {"files": {path: tree}}}'),
    merge: bool = typer.Option(False, "--merge", help="also write one table per dataset, partitions in order"),
) -> None:
    """Build a unit's paired GEN/RECO training table from NanoAOD files."""
    from flashsim.datasets import extract
    from flashsim.unit import load_unit

    _scale_out_options(output, output_dir, workers, scheduler, merge, input, fileset)
    if output_dir is not None and max_events is not None:
        raise typer.BadParameter("--max-events applies to --output only")
    try:
        if output_dir is not None:
            from flashsim.distributed import extract_partitions

            _run_partitioned(lambda inputs, client, progress: extract_partitions(
                unit, inputs, output_dir, client=client, partition_size=partition_size, progress=progress),
                fileset, input, workers, scheduler, merge, f"dataset {unit}")
            return
        with console.status(f"extracting {unit} rows"):
            table = extract(load_unit(unit, require_trained=False), input, max_events=max_events)
        table.save(output)
        console.print(f"{table.report.summary()}\nwrote {output}")
    except FlashsimError as exc:
        raise _fail(exc) from exc


@app.command()
def train(
    unit: str = typer.Argument(..., help="unit name: reads the packaged recipe <unit>.toml unless --recipe is given"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="recipe TOML"),
    set_: list[str] = typer.Option([], "--set", help="override any recipe field: section.key=value (repeatable)"),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: Optional[str] = typer.Option(None, "--device", help="auto|cpu|cuda"),
    input: list[str] = typer.Option([], "--input", "-i", help="override data.inputs"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="unit directory to write (default: the zoo unit)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint"),
) -> None:
    """Train a unit (flow, efficiency and multiplicity models) from its recipe."""
    from flashsim.recipe import load_recipe
    from flashsim.train import train_unit

    overrides = list(set_)
    overrides += [f"training.epochs={epochs}"] if epochs is not None else []
    overrides += [f"training.batch_size={batch_size}"] if batch_size is not None else []
    overrides += [f'training.device="{device}"'] if device is not None else []
    overrides += [f"output={str(output)!r}".replace("'", '"')] if output is not None else []
    if input:
        overrides.append("data.inputs=[" + ",".join(f'"{i}"' for i in input) + "]")
    try:
        r = load_recipe(recipe or unit, overrides)
        with _progress() as bar:
            tasks: dict[str, int] = {}

            def progress(info: dict) -> None:
                key = f"{info['epochs']}"
                if key not in tasks:
                    tasks[key] = bar.add_task(f"{r.unit}", total=info["epochs"], rate="")
                bar.update(tasks[key], completed=info["epoch"],
                           rate=f"train {info['train']:.4f} val {info['val']:.4f} {info['samples_per_s']:,.0f} samples/s")

            train_unit(r, resume=resume, log=console.print, progress=progress)
    except FlashsimError as exc:
        raise _fail(exc) from exc


@app.command()
def units() -> None:
    """List the units found by name ($FLASHSIM_UNITS directories, then the packaged zoo) and whether they are trained."""
    from flashsim.unit import UnitSpec
    from flashsim.locations import find_units, zoo_dir

    zoo = zoo_dir().resolve()
    table = Table("unit", "type", "output", "model", "trained", "from", "description")
    for directory in find_units().values():
        spec = UnitSpec.load(directory / "unit.toml")
        trained = "yes" if (directory / "model.safetensors").is_file() else "no"
        origin = "zoo" if directory.resolve().parent == zoo else str(directory.parent)
        table.add_row(spec.name, spec.type, spec.output, spec.model.get("type", "?"), trained, origin, spec.description)
    Console().print(table)


def _register_optional() -> None:
    from flashsim.refsim.cli import refsim
    from flashsim.validate.cli import validate

    app.command(help="Reference simulation: Pythia8 + a particle-level detector -> paired GEN+RECO NanoAOD.")(refsim)
    app.command(help="Compare a flash sample with a reference: metrics, plots and an HTML report.")(validate)


_register_optional()
