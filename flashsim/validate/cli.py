"""``flashsim validate``: the command-line face of :func:`flashsim.validate.report.validate`.

The integrator registers the plain function :func:`validate` on the ``flashsim`` typer app::

    app.command("validate")(flashsim.validate.cli.validate)

Errors (a :class:`~flashsim.errors.FlashsimError` such as a missing collection, or a missing file)
propagate: the ``flashsim`` app prints them on one line and exits 1.

``--analysis NAME_OR_TOML`` (repeatable) adds an analysis-level comparison: a packaged spec
(``flashsim/analyses/<name>.toml``: wjets_munu, ttbar_ljets, zmumu_jets, vbf_hmumu) or a spec file,
run on both samples into a cut flow with yields and pulls and the shapes of its observables. With
``--analysis`` the collections are compared only when ``--collections`` is given.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import typer

from flashsim.locations import analysis_names

if TYPE_CHECKING:
    from flashsim.analysis import AnalysisSpec

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


def _read(path: Path, collections: list[str], label: str, specs: Sequence[AnalysisSpec] = ()):
    """The requested collections (and what the report uses beside them), plus those the analysis specs
    read that the file has (weights are optional; a missing object collection is an error naming it)."""
    from flashsim.io import read_events  # lazily: reading files is the integrator's module

    available = _available_collections(path)
    for spec in specs:
        if available is not None:
            spec.check_collections(available, f"{label} sample {path}")
    optional = [c for spec in specs for c in spec.collections() if available is None or c in available]
    return read_events(str(path), collections=needed_collections(list(dict.fromkeys([*collections, *optional])), available))


def validate(
    flash: Path = typer.Option(..., "--flash", help="flashsim output (ROOT or Parquet; a glob is fine)"),
    reference: Path = typer.Option(..., "--reference", help="reference sample with the same collections"),
    collections: Optional[str] = typer.Option(None, "--collections",
                                              help="comma-separated collections to compare (default Jet,Muon; none with --analysis)"),
    analysis: Optional[list[str]] = typer.Option(None, "--analysis",
                                                 help=f"analysis spec (repeatable): a TOML file or a packaged name "
                                                      f"({', '.join(analysis_names())}); cut flow, yields, shapes"),
    out: Path = typer.Option(..., "--out", help="output folder for report.html, metrics.json and plots/"),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="TOML file of pass/fail thresholds"),
    splits: int = typer.Option(8, "--splits", min=1, help="random event splits summed in the noise-floor ratio"),
    seed: int = typer.Option(0, "--seed", help="seed of the splits, bootstraps and classifier"),
    strict: bool = typer.Option(False, "--strict", help="exit with status 1 when a check fails"),
) -> None:
    """Compare flashsim output to a reference: noise-floor ratios, classifier AUC, profiles, plots and an HTML report."""
    from rich.console import Console

    from flashsim.analysis import load_analysis
    from flashsim.validate.report import validate as run_validation

    console = Console()
    specs = [load_analysis(a) for a in analysis or []]
    colls = [c.strip() for c in (collections if collections is not None else "" if specs else "Jet,Muon").split(",") if c.strip()]
    if not colls and not specs:
        raise typer.BadParameter("give at least one collection, e.g. --collections Jet,Muon", param_hint="'--collections'")
    thr = load_thresholds(thresholds)
    with console.status("reading flash sample") as status:
        flash_events = _read(flash, colls, "flash", specs)
        status.update("reading reference sample")
        ref_events = _read(reference, colls, "reference", specs)
        metrics = run_validation(
            flash_events, ref_events, colls, out, thr, n_splits=splits, seed=seed,
            progress=lambda msg: status.update(msg), analyses=specs,
        )
    if colls:
        _print_checks(console, metrics)
    for a in metrics.get("analyses", {}).values():
        _print_cutflow(console, a)
    console.print(f"report: {metrics['files']['html']}\nmetrics: {metrics['files']['metrics']}")
    if strict and not metrics["pass"]:
        raise typer.Exit(1)


def _print_checks(console, metrics: dict) -> None:
    """The collections' checks, one row each."""
    from rich.table import Table

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


def _print_cutflow(console, a: dict) -> None:
    """An analysis' cut flow: events and yields of flash beside reference, with pulls; then its notes."""
    from rich.table import Table

    def num(x, digits: int) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    table = Table(title=f"analysis {a['name']}: cut flow (max |pull| {num(a['max_abs_pull'], 2)}, "
                        f"max shape χ²/ndf {num(a['max_chi2_ndf'], 2)})")
    heads = ["cut", "events flash", "events ref", "yield flash", "yield ref", "flash/ref", "pull"] + (["paired pull"] if a["paired"] else [])
    for h in heads:
        table.add_column(h, justify="left" if h == "cut" else "right")
    for row in a["cutflow"]:
        table.add_row(row["cut"], str(row["events_flash"]), str(row["events_reference"]),
                      f"{row['yield_flash']:.1f} ± {row['yield_flash_err']:.1f}",
                      f"{row['yield_reference']:.1f} ± {row['yield_reference_err']:.1f}", num(row["ratio"], 3),
                      num(row["pull"], 2), *([num(row["pull_paired"], 2)] if a["paired"] else []))
    console.print(table)
    for note in a["notes"]:
        console.print(f"  note: {note}")
