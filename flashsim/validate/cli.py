"""``flashsim validate``: the command-line face of :func:`flashsim.validate.report.validate`.

The integrator registers the plain function :func:`validate` on the ``flashsim`` typer app::

    app.command("validate")(flashsim.validate.cli.validate)

Errors (a :class:`~flashsim.errors.FlashsimError` such as a missing collection, or a missing file)
propagate: the ``flashsim`` app prints them on one line and exits 1.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Optional

import typer

__all__ = ["validate", "load_thresholds", "needed_collections"]


def load_thresholds(path: Path | None) -> dict | None:
    """Thresholds from a TOML file: top-level ``ratio_max``/``ratio_median``/``auc_max`` and
    optional per-collection tables (``[Jet] ratio_max = 3``, ``[Jet.variables] jetId = 5``)."""
    from flashsim.errors import ConfigError

    if path is None:
        return None
    with open(path, "rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not a valid thresholds TOML file ({exc})") from exc


def needed_collections(collections: list[str], available: set[str] | None = None) -> list[str]:
    """The requested collections plus what the report uses beside them when the file has it:
    the gen collections they point to and the event numbers that tell whether samples are paired."""
    from flashsim.validate.report import EVENT_GEN, GEN_LINKS

    extra = ["run", "luminosityBlock", "event", *sorted(set(GEN_LINKS.values()) | set(EVENT_GEN.values()))]
    out = list(collections)
    if available is None:  # cannot tell what the file holds: ask only for what was requested
        return out
    for x in extra:
        if x not in out and x in available:
            out.append(x)
    return out


def _available_collections(path: Path) -> set[str] | None:
    """Collections present in the first file of ``path`` (None when it cannot be told cheaply)."""
    from flashsim.errors import InputError
    from flashsim.events import collection_of
    from flashsim.io.reader import open_source, resolve_inputs

    try:
        first = resolve_inputs(str(path))[0]
        return {collection_of(k) for k in open_source(first).keys}
    except (InputError, OSError):  # read_events reports it when reading
        return None


def _read(path: Path, collections: list[str]):
    from flashsim.io import read_events  # lazily: reading files is the integrator's module

    return read_events(str(path), collections=needed_collections(collections, _available_collections(path)))


def validate(
    flash: Path = typer.Option(..., "--flash", help="flashsim output (ROOT or Parquet; a glob is fine)"),
    reference: Path = typer.Option(..., "--reference", help="reference sample with the same collections"),
    collections: str = typer.Option("Jet,Muon", "--collections", help="comma-separated collections to compare"),
    out: Path = typer.Option(..., "--out", help="output folder for report.html, metrics.json and plots/"),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="TOML file of pass/fail thresholds"),
    splits: int = typer.Option(8, "--splits", min=1, help="random event splits summed in the noise-floor ratio"),
    seed: int = typer.Option(0, "--seed", help="seed of the splits, bootstraps and classifier"),
    strict: bool = typer.Option(False, "--strict", help="exit with status 1 when a check fails"),
) -> None:
    """Compare flashsim output to a reference: noise-floor ratios, classifier AUC, profiles, plots and an HTML report."""
    from rich.console import Console
    from rich.table import Table

    from flashsim.validate.report import validate as run_validation

    console = Console()
    colls = [c.strip() for c in collections.split(",") if c.strip()]
    if not colls:
        raise typer.BadParameter("give at least one collection, e.g. --collections Jet,Muon", param_hint="'--collections'")
    thr = load_thresholds(thresholds)
    with console.status("reading flash sample") as status:
        flash_events = _read(flash, colls)
        status.update("reading reference sample")
        ref_events = _read(reference, colls)
        metrics = run_validation(
            flash_events, ref_events, colls, out, thr, n_splits=splits, seed=seed,
            progress=lambda msg: status.update(msg),
        )

    table = Table(title=f"flashsim validate — {'PASS' if metrics['pass'] else 'FAIL'}")
    for col in ("collection", "check", "value", "threshold", "result", "detail"):
        table.add_column(col, justify="left" if col in ("collection", "check", "detail") else "right")
    for c, r in metrics["collections"].items():
        for ch in r["checks"]:
            v, t = ch["value"], ch["threshold"]
            table.add_row(
                c, ch["name"], "–" if v is None else f"{v:.3f}", "–" if t is None else f"{t:g}",
                "[green]PASS[/]" if ch["pass"] else "[red]FAIL[/]", ch.get("detail", ""),
            )
    console.print(table)
    console.print(f"report: {metrics['files']['html']}\nmetrics: {metrics['files']['metrics']}")
    if strict and not metrics["pass"]:
        raise typer.Exit(1)
