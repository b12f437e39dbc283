"""The ``flashsim`` command: refsim, gen, simulate, dataset, train, generate, validate, units.

Exit codes: 0 success, 1 an error the user can fix (a :class:`~flashsim.errors.FlashsimError` or an
OS error such as a missing or unreadable file, printed as one ``error:`` line on stderr), 2 a usage
error (unknown option, missing argument, value out of range). ``--debug`` (anywhere on the command
line) or ``FLASHSIM_DEBUG=1`` shows the full traceback instead.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from flashsim.errors import FlashsimError
from flashsim.interrupts import install_handlers
from flashsim.locations import DEFAULT_CHAIN

DEBUG_ENV = "FLASHSIM_DEBUG"
PRECISION_HELP = ("the precision of the coupling flows' conditioner networks (the splines and all else stay float32). bfloat16 is opt-in: "
                  "faster where bfloat16 matrix products are (CPUs with AMX, GPUs), and its samples move from float32's "
                  "with the same seed by bfloat16 rounding (about a quarter of the jets' pt by more than 0.1 %)")
console = Console(stderr=True)


def _user_error(exc: BaseException) -> str | None:
    """The one-line message of an error the user caused, or None for a bug (shown with its traceback)."""
    if isinstance(exc, FlashsimError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno != errno.EPIPE:  # a missing, unreadable or unwritable path
        if exc.filename is None:
            return str(exc) or type(exc).__name__
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        return f"{where}: {exc.strerror or type(exc).__name__}"
    return None


class _FlashsimGroup(TyperGroup):
    """The ``flashsim`` command group: the one place where errors become a message and an exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # --debug is a group option but accepted anywhere before "--" (e.g. appended to a failed command)
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _user_error(exc)
            if message is None or ctx.params.get("debug"):
                raise
            console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
            raise typer.Exit(code=1) from None


app = typer.Typer(cls=_FlashsimGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="flashsim: machine-learning fast simulation of LHC events (GEN -> NANOAOD-like RECO).")


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", envvar=DEBUG_ENV,  # noqa: ARG001  (read by _FlashsimGroup from ctx.params)
                               help=f"show the full traceback of an error (also {DEBUG_ENV}=1)"),
) -> None:
    """flashsim: machine-learning fast simulation of LHC events (GEN -> NANOAOD-like RECO)."""
    install_handlers()  # Ctrl-C and a batch system's SIGTERM: clean up and leave with 128 + signal


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device(value: Optional[str]) -> Optional[str]:
    """Check a --device value (whether this machine has it is checked when the device is used)."""
    if value is not None and not _DEVICE.fullmatch(value):
        raise typer.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
    return value


def _unit_names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(f"give at least one unit, e.g. --chain {','.join(DEFAULT_CHAIN)}", param_hint="'--chain'")
    return names


def _event_id(text: str) -> tuple[int, int, int]:
    """RUN:LUMI:EVENT as three integers."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise typer.BadParameter(f"{text!r} is not RUN:LUMI:EVENT (three integers)", param_hint="'--select'")
    run, lumi, event = (int(p) for p in parts)
    return run, lumi, event


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def _scale_out_options(output: Optional[Path], output_dir: Optional[Path], workers: Optional[int],
                       scheduler: Optional[str], merge: bool, input: Sequence[str], fileset: Optional[Path]) -> None:
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

    from flashsim.distributed import cluster, load_fileset, merge_outputs

    inputs = load_fileset(fileset) if fileset is not None else input
    start = time.perf_counter()
    with cluster(workers, scheduler, log=console.print) as client, _progress() as bar:
        task = bar.add_task(what, total=0, rate="scanning inputs")
        first: list[float] = []  # time and events at the first report (after the input scan and resume check)

        def progress(done: int, partitions: int, events: int, total: int) -> None:
            first.extend([] if first else [time.perf_counter(), events])
            rate = (events - first[1]) / max(time.perf_counter() - first[0], 1e-9)
            bar.update(task, completed=events, total=total, rate=f"{done}/{partitions} partitions {rate:,.0f} ev/s")

        manifest = run(inputs, client, progress)  # PartitionsFailed lists the failures and the manifest
    elapsed = time.perf_counter() - start
    r = manifest.run
    console.print(f"{manifest.events:,} events in {r['partitions']} partitions ({r['ran']} run, {r['skipped']} already done) "
                  f"in {elapsed:.1f} s; manifest {manifest.path}")
    _print_skipped(manifest.skipped_events)
    if merge:
        for path in merge_outputs(manifest.path):
            console.print(f"merged {path}")


def _print_skipped(skipped: Mapping[str, int]) -> None:
    """One line per GEN branch whose bad values made events be skipped."""
    for branch, n in sorted(skipped.items()):
        console.print(f"skipped {n:,} events with a non-finite or unphysical {branch}")


@app.command()
def generate(
    chain: str = typer.Option(..., "--chain", help="comma-separated units: names ($FLASHSIM_UNITS, then the zoo) or directories"),
    input: list[str] = typer.Option([], "--input", "-i", help="GEN NanoAOD file(s) or glob(s), ROOT or Parquet"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="output file (.root or .parquet)"),
    format: Optional[Literal["root", "parquet"]] = typer.Option(
        None, "--format", help="root|parquet (default: from the suffix; root with --output-dir)"),
    device: str = typer.Option("auto", "--device", callback=_device, help="auto|cpu|cuda|cuda:N"),
    precision: Literal["float32", "bfloat16"] = typer.Option("float32", "--precision", help=PRECISION_HELP),
    batch_size: int = typer.Option(100_000, "--batch-size", min=1, help="objects per model call"),
    step_size: int = typer.Option(50_000, "--step-size", min=1, help="events per chunk read (bounds memory)"),
    seed: int = typer.Option(0, "--seed", min=0),
    keep_gen: bool = typer.Option(False, "--keep-gen", help="copy the input GEN collections to the output"),
    oversample: int = typer.Option(1, "--oversample", min=1, help="simulate each GEN event N times (weight 1/N)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="one file per partition + manifest.json (rerun resumes)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="start a local dask cluster of N worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="use an existing dask scheduler (tcp://host:8786)"),
    partition_size: int = typer.Option(50_000, "--partition-size", min=1, help="events per partition (task) with --output-dir"),
    fileset: Optional[Path] = typer.Option(None, "--fileset", help='coffea-style fileset JSON {"dataset": {"files": {path: tree}}}'),
    merge: bool = typer.Option(False, "--merge", help="also write one file per dataset, partitions in order"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per partition task"),
    select: list[str] = typer.Option([], "--select", help="simulate only the event RUN:LUMI:EVENT (repeatable), exactly as in a full run"),
    on_bad_input: Literal["error", "skip"] = typer.Option(
        "error", "--on-bad-input", help="a non-finite or unphysical GEN value: stop with an error, or skip its event and count it"),
    nano_version: Optional[str] = typer.Option(None, "--nano-version", help="NanoAOD version of the output's branch names and "
                                               "types: v7, v9, v12, v15 (default: the input's)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1,
                                       help="local worker processes writing one --output file (default: every core on CPU, "
                                            "at most one per 10k events; 1 on a GPU)"),
) -> None:
    """Run a chain of units on GEN events and write NANOAOD-like output."""
    import time

    from flashsim.chain import Chain
    from flashsim.io import open_source, resolve_inputs
    from flashsim.processes import available_cores

    _scale_out_options(output, output_dir, workers, scheduler, merge, input, fileset)
    names = _unit_names(chain)
    if output_dir is not None:
        from flashsim.distributed import generate_partitions

        if select:
            raise typer.BadParameter("re-simulate selected events into one file (--output), not partitions", param_hint="'--select'")
        if jobs:
            raise typer.BadParameter("--jobs is for one --output file; with --output-dir give --workers", param_hint="'--jobs'")

        _run_partitioned(lambda inputs, client, progress: generate_partitions(
            names, inputs, output_dir, client=client, seed=seed, partition_size=partition_size, format=format or "root",
            keep_gen=keep_gen, oversample=oversample, device=device, precision=precision, batch_size=batch_size, threads=threads,
            on_bad_input=on_bad_input, nano_version=nano_version, progress=progress),
            fileset, input, workers, scheduler, merge, "generate")
        return
    if output is None:  # not reached: _scale_out_options wants --output or --output-dir
        raise typer.BadParameter("give --output (one file) or --output-dir (one file per partition)")
    events = [_event_id(s) for s in select] or None
    files = resolve_inputs(input)  # bad inputs fail before the units load
    total = sum(open_source(f).num_entries for f in files)
    units = Chain(names, device=device, precision=precision)
    # a worker process costs a few seconds to start (torch, units): one per 10k events at most, by default
    processes = jobs or (min(available_cores(), max(1, total * oversample // 10_000)) if units.device.type == "cpu" else 1)
    console.print(f"chain {units} on {units.device} ({precision} conditioners), {total:,} events from {len(files)} file(s), {processes} process(es)")
    start = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("generate", total=total * oversample, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n * oversample)
            done = bar.tasks[task].completed
            bar.update(task, rate=f"{done / (time.perf_counter() - start):,.0f} ev/s")

        written = units.generate(files, output, format=format, seed=seed, step_size=step_size, batch_size=batch_size,
                                 keep_gen=keep_gen, oversample=oversample, select=events, processes=processes,
                                 on_bad_input=on_bad_input, nano_version=nano_version, progress=advance)
    elapsed = time.perf_counter() - start
    _print_skipped(units.skipped_events)
    console.print(f"wrote {written:,} events to {output} (NanoAOD {units.nano_version}) in {elapsed:.1f} s "
                  f"({written / elapsed:,.0f} events/s)")


@app.command()
def dataset(
    unit: str = typer.Argument(..., help="unit name ($FLASHSIM_UNITS, then the zoo) or directory"),
    input: list[str] = typer.Option([], "--input", "-i", help="NanoAOD file(s) or glob(s) with GEN and RECO"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Parquet table to write"),
    max_events: Optional[int] = typer.Option(None, "--max-events", min=1),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="one table per partition + manifest.json (rerun resumes)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="start a local dask cluster of N worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="use an existing dask scheduler (tcp://host:8786)"),
    partition_size: int = typer.Option(50_000, "--partition-size", min=1, help="events per partition (task) with --output-dir"),
    fileset: Optional[Path] = typer.Option(None, "--fileset", help='coffea-style fileset JSON {"dataset": {"files": {path: tree}}}'),
    merge: bool = typer.Option(False, "--merge", help="also write one table per dataset, partitions in order"),
) -> None:
    """Build a unit's paired GEN/RECO training table from NanoAOD files."""
    from flashsim.datasets import extract
    from flashsim.unit import load_unit

    _scale_out_options(output, output_dir, workers, scheduler, merge, input, fileset)
    if output_dir is not None and max_events is not None:
        raise typer.BadParameter("--max-events applies to --output only")
    if output_dir is not None:
        from flashsim.distributed import extract_partitions

        _run_partitioned(lambda inputs, client, progress: extract_partitions(
            unit, inputs, output_dir, client=client, partition_size=partition_size, progress=progress),
            fileset, input, workers, scheduler, merge, f"dataset {unit}")
        return
    if output is None:  # not reached: _scale_out_options wants --output or --output-dir
        raise typer.BadParameter("give --output (one table) or --output-dir (one table per partition)")
    with console.status(f"extracting {unit} rows"):
        table = extract(load_unit(unit, require_trained=False), input, max_events=max_events)
    table.save(output)
    console.print(f"{table.report.summary()}\nwrote {output}")


@app.command()
def train(
    unit: str = typer.Argument(..., help="unit name: reads the packaged recipe <unit>.toml unless --recipe is given"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="recipe TOML"),
    set_: list[str] = typer.Option([], "--set", help="override any recipe field: section.key=value (repeatable)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device", callback=_device, help="auto|cpu|cuda|cuda:N"),
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
    r = load_recipe(recipe or unit, overrides)
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(info: dict) -> None:
            rate = f"train {info['train']:.4f} val {info['val']:.4f} {info['samples_per_s']:,.0f} samples/s"
            what = f"{info['unit']} {info['fit']}"
            if not console.is_terminal:  # a batch job's log, where a progress bar shows nothing: one line per epoch
                console.print(f"{what}: epoch {info['epoch']}/{info['epochs']} {rate}", soft_wrap=True)
                return
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=info["epochs"], rate="")
            bar.update(tasks[what], completed=info["epoch"], rate=rate)

        train_unit(r, resume=resume, log=console.print, progress=progress)


@app.command()
def tune(
    unit: str = typer.Argument(..., help="unit name: reads the packaged recipe <unit>.toml unless --recipe is given"),
    trials: int = typer.Option(..., "--trials", min=1, help="trials to run now (a rerun adds them to the study)"),
    study: Path = typer.Option(..., "--study", help="study directory: optuna journal, study.json, the best trial's unit"),
    output: Path = typer.Option(..., "--output", "-o", help="directory to write the best trial's unit to"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="recipe TOML with \\[tune.space] and \\[selection] input"),
    set_: list[str] = typer.Option([], "--set", help="override any recipe field: section.key=value (repeatable)"),
) -> None:
    """Search the recipe's \\[tune.space] with optuna, scoring each trial by the physics metric on \\[selection] input."""
    from flashsim.tune import tune_unit

    tune_unit(recipe or unit, trials, study, output, set_, log=console.print)


@app.command()
def units(
    list_kinds: bool = typer.Option(False, "--list-kinds", help="list what unit files and recipes may name: unit kinds, "
                                    "model types, feature kinds, transforms, optimizers, schedules"),
    schema: Optional[Literal["unit", "recipe"]] = typer.Option(None, "--schema", help="print the JSON Schema of unit.toml or of a recipe"),
) -> None:
    """List the units found by name ($FLASHSIM_UNITS directories, then the packaged zoo) and whether they are trained."""
    from flashsim.io.schema import versions_storing
    from flashsim.locations import find_units, zoo_dir
    from flashsim.unit import UnitSpec

    if schema is not None:
        import json

        from flashsim.recipe import Recipe

        model = UnitSpec if schema == "unit" else Recipe
        typer.echo(json.dumps(model.model_json_schema(), indent=1))
        return
    if list_kinds:
        _print_registries()
        return
    zoo = zoo_dir().resolve()
    table = Table("unit", "type", "output", "model", "trained", "trains from", "writes", "from", "description")
    for directory in find_units().values():
        spec = UnitSpec.load(directory / "unit.toml")
        trained = "yes" if (directory / "model.safetensors").is_file() else "no"
        origin = "zoo" if directory.resolve().parent == zoo else str(directory.parent)
        reads, writes = (", ".join(versions_storing(spec.reco_branches, derived=d)) or "-" for d in (True, False))
        table.add_row(spec.name, spec.type, spec.output, spec.model.get("type", "?"), trained, reads, writes, origin, spec.description)
    Console().print(table)


def _print_registries() -> None:
    """Every registry and its entries, with the first line of each entry's docstring."""
    import flashsim.features
    import flashsim.kinds
    import flashsim.models
    import flashsim.optim
    import flashsim.transforms  # noqa: F401  (registering modules)
    from flashsim.registry import REGISTRIES

    table = Table("family", "name", "what it is")
    for family, registry in REGISTRIES.items():
        for name, entry in registry.items():
            table.add_row(family, name, (entry.__doc__ or "").strip().splitlines()[0] if entry.__doc__ else "")
    Console().print(table)


def _register_optional() -> None:
    from flashsim.generators.cli import gen, simulate
    from flashsim.refsim.cli import refsim
    from flashsim.validate.cli import validate

    app.command(help="Reference simulation: Pythia8 + a particle-level detector -> paired GEN+RECO NanoAOD.")(refsim)
    app.command(help="Generator input (Pythia8 card, LHE, HepMC3) -> GEN NanoAOD.")(gen)
    app.command(help="Generator input -> GEN -> a chain of units -> flash NanoAOD, in one command.")(simulate)
    app.command(help="Compare a flash sample with a reference: metrics, plots and an HTML report.")(validate)


_register_optional()


if __name__ == "__main__":  # python -m flashsim.cli
    app(prog_name="flashsim")
