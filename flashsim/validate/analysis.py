"""Analysis-level validation: an analysis spec (:mod:`flashsim.analysis`) applied to flash and reference
events, compared as a cut flow (events and weighted yields after each cut, with pulls) and as the shapes
of its observables (χ²/ndf over both samples' errors, plots with a ratio panel).

The pull of a yield is (flash - reference) / sqrt(σ_flash² + σ_ref²), σ² the sum of squared weights,
as for independent samples. When flash and reference share their GEN events (paired), the paired pull
sum d / sqrt(sum d²) of the per-event differences d is given beside it: it is the sharper test there,
since the events both samples select alike add no error.
"""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import numpy as np

from flashsim.analysis import AnalysisSpec, Observable, Selection, run_analysis
from flashsim.validate import metrics as M

__all__ = ["compare_analysis"]


def _cutflow(spec: AnalysisSpec, f: Selection, r: Selection, paired: bool) -> list[dict]:
    """Per step (all events, then after each cut): events and weighted yields of both samples, their
    ratio and pulls."""
    rows = []
    for i, (name, expression) in enumerate([("all events", ""), *((c.name, c.cut) for c in spec.cuts)]):
        yf, ef = M.weighted_yield(f.weights[f.passed[i]])
        yr, er = M.weighted_yield(r.weights[r.passed[i]])
        row = {"cut": name, "expression": expression,
               "events_flash": int(f.passed[i].sum()), "events_reference": int(r.passed[i].sum()),
               "yield_flash": yf, "yield_flash_err": ef, "yield_reference": yr, "yield_reference_err": er,
               "ratio": yf / yr if yr else float("nan"), "pull": M.yield_pull(yf, ef, yr, er)}
        if paired:
            row["pull_paired"] = M.paired_pull(np.where(f.passed[i], f.weights, 0.0), np.where(r.passed[i], r.weights, 0.0))
        rows.append(row)
    return rows


def _histogram(values: np.ndarray, weights: np.ndarray, undefined: int, edges: np.ndarray) -> dict:
    """Sums of weights and of squared weights per bin; entries, and those outside the bins or undefined."""
    inside = (values >= edges[0]) & (values <= edges[-1])
    return {"sum_w": np.histogram(values, edges, weights=weights)[0], "sum_w2": np.histogram(values, edges, weights=weights**2)[0],
            "entries": int(len(values)), "outside": int((~inside).sum()), "undefined": undefined}


def _observable(spec: AnalysisSpec, obs: Observable, f: Selection, r: Selection, out_dir: Path | None) -> dict:
    """One observable: both histograms, the shape χ²/ndf and (with ``out_dir``) the plot."""
    from flashsim.validate import plots as P

    edges = obs.bin_edges
    (vf, wf), (vr, wr) = f.observables[obs.name], r.observables[obs.name]
    hf, hr = _histogram(vf, wf, f.undefined[obs.name], edges), _histogram(vr, wr, r.undefined[obs.name], edges)
    chi2, ndf = M.shape_chi2(hf["sum_w"], hf["sum_w2"], hr["sum_w"], hr["sum_w2"])
    out: dict = {"expression": obs.expression, "label": obs.label or obs.expression, "edges": edges, "flash": hf,
                 "reference": hr, "chi2": chi2, "ndf": ndf, "chi2_ndf": chi2 / ndf if ndf else float("nan")}
    empty = [label for label, h in (("flash", hf), ("reference", hr)) if h["entries"] == 0]
    if empty:
        out["note"] = f"no selected entry in the {' and '.join(empty)} sample: not compared"
    elif out_dir is not None:
        rel = f"plots/analysis_{spec.name}_{obs.name}.png"
        P.plot_hist_ratio(vf, vr, edges, xlabel=out["label"], path=out_dir / rel, flash_weights=wf, ref_weights=wr,
                          logy=obs.logy, annotation=f"{spec.name}\nχ²/ndf = {chi2:.1f}/{ndf}" if ndf else spec.name)
        out["plot"] = rel
    return out


def compare_analysis(spec: AnalysisSpec, flash: ak.Array, reference: ak.Array, *, paired: bool,
                     out_dir: Path | None = None) -> dict:
    """The cut flow and observables of ``spec`` on flash beside reference (plots into ``out_dir/plots``)."""
    f, r = run_analysis(spec, flash, "flash sample"), run_analysis(spec, reference, "reference sample")
    cutflow = _cutflow(spec, f, r, paired)
    observables = {o.name: _observable(spec, o, f, r, out_dir) for o in spec.observables}
    none = [label for label, sel in (("flash", f), ("reference", r)) if not sel.passed[-1].any()]
    notes = [f"no event passes the selection in the {' and '.join(none)} sample: the observables are not compared"] if none else []
    notes += [f"{name}: {o['note']}" for name, o in observables.items() if "note" in o and not none]
    if f.weight_columns != r.weight_columns:
        notes.insert(0, f"the samples carry different weights: flash {f.weight_columns or 'none'}, "
                        f"reference {r.weight_columns or 'none'}")
    pulls = [abs(row["pull"]) for row in cutflow if math.isfinite(row["pull"])]
    chi2s = [o["chi2_ndf"] for o in observables.values() if math.isfinite(o["chi2_ndf"])]
    return {"name": spec.name, "description": spec.description, "reference": spec.reference, "spec": spec.source,
            "paired": paired, "weights": {"flash": f.weight_columns, "reference": r.weight_columns},
            "cutflow": cutflow, "observables": observables, "notes": notes,
            "max_abs_pull": max(pulls) if pulls else float("nan"), "max_chi2_ndf": max(chi2s) if chi2s else float("nan")}
