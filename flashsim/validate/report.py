"""The validation report: per collection, every variable's noise-floor ratio, a classifier two-sample
test, correlations, efficiency/response/resolution profiles, tagger ROCs and distributions split by
gen flavour or status, judged against thresholds; and per analysis spec a cut flow with yields and
pulls and its observables' shapes (:mod:`flashsim.validate.analysis`); written as PNGs, ``metrics.json``
and one self-contained HTML page.

Usage::

    from flashsim.validate import validate
    metrics = validate(flash_events, reference_events, ["Jet", "Muon", "MET"], Path("report"))
    metrics["pass"], metrics["collections"]["Jet"]["median_ratio"]
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import awkward as ak
import numpy as np

from flashsim.errors import InputError
from flashsim.files import atomic_write_text
from flashsim.validate import metrics as M

if TYPE_CHECKING:
    from flashsim.analysis import AnalysisSpec

__all__ = [
    "DEFAULT_THRESHOLDS",
    "GEN_LINKS",
    "ValidationInputError",
    "validate",
    "metrics_dataframe",
    "resolve_thresholds",
    "compared_variables",
    "gen_efficiency_objects",
]


class ValidationInputError(InputError):
    """A sample cannot be validated: missing or empty collection, NaN/inf or non-numeric values."""


#: default pass/fail thresholds; set a value to None to disable that check
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "ratio_max": 2.0,  # every variable's noise-floor ratio (incl. the multiplicity)
    "ratio_median": 1.3,  # median noise-floor ratio of the collection
    "auc_max": 0.60,  # classifier two-sample AUC, flash vs reference
    "response_ratio_max": 2.0,  # noise-floor ratio of the pt response (reco/gen; reco-gen for MET)
}
_THRESHOLD_KEYS = set(DEFAULT_THRESHOLDS)

#: reco index field -> gen collection it points into
GEN_LINKS: dict[str, str] = {
    "genJetIdx": "GenJet",
    "genJetAK8Idx": "GenJetAK8",
    "genPartIdx": "GenPart",
}
#: singleton reco collection -> its gen counterpart (response, classifier features)
EVENT_GEN: dict[str, str] = {"MET": "GenMET", "PuppiMET": "GenMET"}
#: |pdgId| of the gen particles a reco collection reconstructs (efficiency denominator, status 1)
_GEN_PDGID = {"Muon": 13, "Electron": 11, "Photon": 22}
_IDX = re.compile(r"Idx\d*$")
_FLAVOURS = {"b": 5, "c": 4, "light": 0}
_CORNER_FIRST = ("pt", "eta", "phi", "mass")


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------


def resolve_thresholds(thresholds: Mapping | None, collection: str) -> dict:
    """Thresholds for one collection: defaults <- top-level keys <- ``thresholds[collection]``.

    A collection table may hold ``variables = {name = ratio_max}`` per-variable overrides.
    """
    out: dict = dict(DEFAULT_THRESHOLDS)
    out["variables"] = {}
    if not thresholds:
        return out
    for k, v in thresholds.items():
        if k in _THRESHOLD_KEYS:
            out[k] = v
        elif k == "variables":
            out["variables"].update(v)
        elif not isinstance(v, Mapping):
            raise ValidationInputError(f"unknown threshold {k!r} (known: {sorted(_THRESHOLD_KEYS)}, or a collection table)")
    coll = thresholds.get(collection)
    if isinstance(coll, Mapping):
        for k, v in coll.items():
            if k in _THRESHOLD_KEYS:
                out[k] = v
            elif k == "variables":
                out["variables"].update(v)
            else:
                raise ValidationInputError(f"unknown threshold {collection}.{k!r} (known: {sorted(_THRESHOLD_KEYS)}, variables)")
    return out


# --------------------------------------------------------------------------------------------
# Extraction of a collection into flat NumPy arrays
# --------------------------------------------------------------------------------------------


@dataclass
class _Coll:
    """One collection of one sample, flattened: per-object values with their event index."""

    label: str
    name: str
    n_events: int
    jagged: bool
    event: np.ndarray
    counts: np.ndarray | None
    fields: dict[str, np.ndarray]
    skipped: list[str] = field(default_factory=list)
    matched: np.ndarray | None = None  # per object: has a valid gen link
    gen: dict[str, np.ndarray] = field(default_factory=dict)  # per matched object, gen values
    gen_objects: dict[str, np.ndarray] = field(default_factory=dict)  # efficiency denominator: pt, eta, matched
    gen_name: str | None = None

    def ev(self, name: str, sel: np.ndarray | None = None) -> M.EventValues:
        """Values of one variable of the selected objects (all with ``sel=None``), with their events."""
        return M.EventValues(_sel(self.fields[name], sel), _sel(self.event, sel), self.n_events)

    def multiplicity(self) -> M.EventValues:
        """Number of objects per event, one entry per event."""
        assert self.counts is not None, "multiplicity of a one-per-event collection"
        return M.EventValues(self.counts.astype(np.float64), np.arange(self.n_events), self.n_events)


def compared_variables(coll: ak.Array) -> list[str]:
    """Fields of a collection that are compared: numeric (incl. bool) and not an index (``*Idx``)."""
    out = []
    for f in coll.fields:
        if _IDX.search(f):
            continue
        t = ak.type(coll[f])
        while hasattr(t, "content"):
            t = t.content
        prim = getattr(t, "primitive", None)
        if prim is not None and (prim == "bool" or prim.startswith(("int", "uint", "float"))):
            out.append(f)
    return out


def _numpy(values: ak.Array, label: str, where: str) -> np.ndarray:
    arr = ak.to_numpy(values)
    if isinstance(arr, np.ma.MaskedArray):
        if np.ma.is_masked(arr):
            raise ValidationInputError(f"{label} sample: {where} has {int(arr.mask.sum())} missing (None) values")
        arr = arr.data
    arr = np.asarray(arr).astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValidationInputError(
            f"{label} sample: {where} has {int(bad.sum())} NaN/inf values out of {len(arr)}; "
            "flashsim output must be finite (check the unit's redraw guard)"
        )
    return arr


def _get_collection(events: ak.Array, name: str, label: str) -> ak.Array:
    if name not in (events.fields or []):
        raise ValidationInputError(
            f"collection {name!r} is missing from the {label} sample (available: {', '.join(events.fields) or 'none'})"
        )
    coll = events[name]
    if not coll.fields:
        raise ValidationInputError(f"{label} sample: {name!r} is a scalar branch, not a collection")
    return coll


def _flatten_fields(coll: ak.Array, names: Sequence[str], label: str, cname: str, jagged: bool) -> dict[str, np.ndarray]:
    out = {}
    for f in names:
        v = coll[f]
        if jagged:
            v = ak.flatten(v, axis=1)
        out[f] = _numpy(v, label, f"{cname}.{f}")
    return out


def _extract(events: ak.Array, name: str, label: str) -> _Coll:
    coll = _get_collection(events, name, label)
    n = len(events)
    if n == 0:
        raise ValidationInputError(f"{label} sample has no events")
    jagged = coll.ndim == 2
    names = compared_variables(coll)
    skipped = [f for f in coll.fields if f not in names and not _IDX.search(f)]
    if jagged:
        counts = ak.to_numpy(ak.num(coll, axis=1)).astype(np.int64)
        if counts.sum() == 0:
            raise ValidationInputError(f"collection {name!r} has no objects in the {label} sample ({n} events)")
        event = np.repeat(np.arange(n), counts)
    else:
        counts, event = None, np.arange(n)
    fields = _flatten_fields(coll, names, label, name, jagged)
    return _Coll(label, name, n, jagged, event, counts, fields, skipped)


def _attach_gen(c: _Coll, events: ak.Array, gen_events: ak.Array) -> None:
    """Find the collection's gen link and attach matched flags, gen values of matched objects and
    the efficiency denominator. ``gen_events`` holds the gen collections (the reference's in a
    paired comparison where flash carries none)."""
    coll = events[c.name]
    if c.jagged:
        for idx_field, gen_name in GEN_LINKS.items():
            if idx_field in coll.fields and gen_name in (gen_events.fields or []):
                break
        else:
            return
        gen = gen_events[gen_name]
        n_gen = ak.to_numpy(ak.num(gen, axis=1)).astype(np.int64)
        glob, valid = M._flat_match(coll[idx_field], n_gen)
        gen_vars = compared_variables(gen)
        gflat = _flatten_fields(gen, gen_vars, c.label, gen_name, True)
        c.matched = valid
        c.gen = {k: v[glob[valid]] for k, v in gflat.items()}
        c.gen_name = gen_name
        # efficiency denominator: gen objects of the kind this collection reconstructs
        hit = np.zeros(int(n_gen.sum()), bool)
        hit[glob[valid]] = True
        denom = np.ones(len(hit), bool)
        pdg = _GEN_PDGID.get(c.name)
        if gen_name == "GenPart" and pdg is not None and "pdgId" in gflat:
            denom = np.abs(gflat["pdgId"]) == pdg
            if "status" in gflat:
                denom &= gflat["status"] == 1
        if "pt" in gflat and "eta" in gflat:
            c.gen_objects = {"pt": gflat["pt"][denom], "eta": gflat["eta"][denom], "matched": hit[denom]}
    else:
        event_gen = EVENT_GEN.get(c.name)
        if event_gen and event_gen in (gen_events.fields or []) and gen_events[event_gen].ndim == 1:
            gen = gen_events[event_gen]
            c.gen = _flatten_fields(gen, compared_variables(gen), c.label, event_gen, False)
            c.matched = np.ones(c.n_events, bool)
            c.gen_name = event_gen


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def gen_efficiency_objects(events: ak.Array, collection: str, gen_events: ak.Array | None = None) -> dict[str, np.ndarray]:
    """pt, eta and a reconstructed flag of the gen objects that ``collection`` reconstructs (the
    efficiency denominator); gen collections come from ``gen_events`` (default: ``events``)."""
    c = _extract(events, collection, "sample")
    _attach_gen(c, events, events if gen_events is None else gen_events)
    if not c.gen_objects:
        raise ValidationInputError(f"collection {collection!r} has no gen link with pt and eta to take an efficiency on")
    return c.gen_objects


def _is_paired(flash: ak.Array, ref: ak.Array) -> bool:
    """Flash and reference share GEN events: same length and same ``run``/``event`` numbers, or
    (without event numbers) identical gen collections."""
    if len(flash) != len(ref):
        return False
    ff, rf = set(flash.fields or []), set(ref.fields or [])
    ids = [k for k in ("run", "luminosityBlock", "event") if k in ff and k in rf]
    if "event" in ids:
        return all(bool(ak.all(flash[k] == ref[k])) for k in ids)
    for g in ("GenJet", "GenPart", "GenMET"):
        if g in ff and g in rf and "pt" in (flash[g].fields or []) and "pt" in (ref[g].fields or []):
            return _same_values(flash[g].pt, ref[g].pt)
    return False


def _same_values(a: ak.Array, b: ak.Array) -> bool:
    """Same shape (the same number of entries in every event, when jagged) and the same values."""
    if a.ndim != b.ndim:
        return False
    if a.ndim == 2 and not ak.all(ak.num(a, axis=1) == ak.num(b, axis=1)):
        return False
    return bool(ak.all(ak.ravel(a) == ak.ravel(b)))


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def jsonable(x):
    """``x`` as strict JSON values: numpy scalars and arrays as Python ones, non-finite floats as null."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–" if x is None or math.isnan(x) else "inf"
    return f"{x:.{digits}f}"


# --------------------------------------------------------------------------------------------
# One collection
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    out_dir: Path
    plot_dir: Path
    n_splits: int
    seed: int
    paired: bool
    n_bootstrap: int
    classifier_max_rows: int
    classifier_threads: int | None
    make_plots: bool
    progress: Callable[[str], None]


def _splits(n_flash: int, n_ref: int, ctx: _Ctx) -> list[M.Split]:
    return M.event_splits(n_flash, n_ref, paired=ctx.paired, n_splits=ctx.n_splits, seed=ctx.seed)


def _var_metrics(f: M.EventValues, r: M.EventValues, splits: list[M.Split]) -> dict:
    nf = M._noise_floor_from_splits(f, r, splits)
    return {
        "ratio": nf.ratio,
        "w1_flash_sum": nf.w1_flash,
        "w1_floor_sum": nf.w1_floor,
        "w1": M.wasserstein(f.values, r.values),
        "ks": M.ks_distance(f.values, r.values),
        "n_flash": int(len(f.values)),
        "n_reference": int(len(r.values)),
    }


def _log_pt_bins(pt: np.ndarray, n: int = 12) -> np.ndarray:
    pt = pt[pt > 0]
    if len(pt) == 0:
        return np.linspace(0, 1, n + 1)
    lo, hi = np.quantile(pt, [0.01, 0.99])
    if not hi > lo:
        hi = lo * 2 + 1
    return np.geomspace(lo, hi, n + 1)


def _eta_bins(eta: np.ndarray, n: int = 12) -> np.ndarray:
    m = float(np.quantile(np.abs(eta), 0.995)) if len(eta) else 1.0
    return np.linspace(-m, m, n + 1) if m > 0 else np.linspace(-1, 1, n + 1)


@dataclass
class _Pair:
    """One collection under comparison: the flash samples (the first is reported), the reference,
    the variables both have, the compared objects (``sel_*``: gen-matched ones, None for all) and
    each flash sample's event splits. Collects the paths of the plots it writes."""

    name: str
    flash: list[_Coll]
    ref: _Coll
    common: list[str]
    gen_linked: bool
    gen_feats: list[str]
    sel_f: list[np.ndarray | None]
    sel_r: np.ndarray | None
    member_splits: list[list[M.Split]]
    ctx: _Ctx
    plots: list[str] = field(default_factory=list)

    @property
    def fl(self) -> _Coll:
        return self.flash[0]

    @property
    def splits(self) -> list[M.Split]:
        return self.member_splits[0]

    @property
    def matched_only(self) -> bool:
        """Only gen-matched objects are compared (a gen-linked object collection)."""
        return self.gen_linked and self.ref.jagged

    def plot(self, fname: str, fn, *args, **kwargs) -> None:
        """Draw ``fn(*args, **kwargs)`` into ``plots/fname`` and record it (nothing without plots)."""
        if not self.ctx.make_plots:
            return
        path = self.ctx.plot_dir / fname
        fn(*args, path=path, **kwargs)
        self.plots.append(path.relative_to(self.ctx.out_dir).as_posix())

    def ref_band(self, ev: M.EventValues, bins: np.ndarray):
        """The reference's bootstrap band in ``bins`` (None without bootstraps)."""
        return M.bootstrap_band(ev, bins, n_boot=self.ctx.n_bootstrap, seed=self.ctx.seed) if self.ctx.n_bootstrap else None


def _pair(name: str, flash: list[_Coll], ref: _Coll, ctx: _Ctx) -> _Pair:
    """Check that the samples can be compared and choose the compared objects: the gen-matched
    ones when every sample of an object collection has a gen link, else all."""
    fl = flash[0]
    if fl.jagged != ref.jagged:
        raise ValidationInputError(f"collection {name!r} is jagged in one sample and a singleton in the other")
    common = [v for v in ref.fields if v in fl.fields]
    if not common:
        raise ValidationInputError(f"collection {name!r}: no numeric variable common to flash and reference")
    gen_linked = ref.matched is not None and all(f.matched is not None for f in flash)
    matched_only = gen_linked and ref.jagged
    sel_f = [f.matched if matched_only else None for f in flash]
    sel_r = ref.matched if matched_only else None
    for c, s in [(ref, sel_r), *zip(flash, sel_f)]:
        if s is not None and not s.any():
            raise ValidationInputError(
                f"collection {name!r} has no gen-matched object in the {c.label} sample "
                f"(every {ref.gen_name} index is negative or out of range)"
            )
    gen_feats = [g for g in ref.gen if g in fl.gen] if gen_linked else []
    member_splits = [_splits(f.n_events, ref.n_events, ctx) for f in flash]
    return _Pair(name, flash, ref, common, gen_linked, gen_feats, sel_f, sel_r, member_splits, ctx)


def _sel(a: np.ndarray, sel: np.ndarray | None) -> np.ndarray:
    """``a[sel]``, or all of ``a`` when there is no selection."""
    return a if sel is None else a[sel]


def _subset(ev: M.EventValues, mask: np.ndarray) -> M.EventValues:
    """The entries of ``ev`` where ``mask`` is True."""
    return M.EventValues(ev.values[mask], ev.event[mask], ev.n_events)


def _validate_collection(name: str, flash: list[_Coll], ref: _Coll, thr: dict, ctx: _Ctx) -> dict:
    """Every metric, check and plot of one collection: its entry in ``metrics.json``."""
    p = _pair(name, flash, ref, ctx)
    res: dict = {
        "kind": "jagged" if ref.jagged else "singleton",
        "plots": p.plots,
        "not_compared": _not_compared(p.fl, ref),
        "gen_link": ref.gen_name if p.gen_linked else None,
        "selection": "gen-matched" if p.matched_only else "all",
    }
    ctx.progress(f"{name}: noise-floor ratios ({ctx.n_splits} splits)")
    variables = _noise_floor_ratios(p, thr)
    res["variables"] = variables
    res.update(_ratio_summary(variables))
    res.update(_all_objects(p))
    ctx.progress(f"{name}: classifier two-sample test")
    xf, evf = _features(p, p.fl, p.sel_f[0])
    xr, evr = _features(p, ref, p.sel_r)
    res["classifier"] = _classifier(p, xf, evf, xr, evr)
    res.update(_correlation(p, xf, xr, evr))
    eff, resp = _efficiency(p), _response(p)
    res["checks"] = _ratio_checks(res, thr) + _auc_check(res["classifier"], thr) + _response_check(resp, thr)
    res["pass"] = all(c["pass"] for c in res["checks"])
    if eff is not None:
        res["efficiency"] = eff
    if resp is not None:
        res["response"] = resp
    res.update(_by_category(p))
    if ctx.make_plots:
        ctx.progress(f"{name}: plots")
        _distribution_plots(p, variables)
        _corner_plot(p, xf, xr)
    res["plots"] = _plots_in_order(name, variables, p.plots)
    return res


def _not_compared(fl: _Coll, ref: _Coll) -> dict:
    """Variables left out: in one sample only, or not numeric."""
    return {
        "only_in_reference": [v for v in ref.fields if v not in fl.fields],
        "only_in_flash": [v for v in fl.fields if v not in ref.fields],
        "non_numeric": sorted(set(fl.skipped) | set(ref.skipped)),
    }


# ---- noise-floor ratios


def _member_metrics(p: _Pair, flash: list[M.EventValues], ref: M.EventValues) -> dict:
    """Metrics of the first flash sample, with every member's noise-floor ratio beside for an ensemble."""
    m = _var_metrics(flash[0], ref, p.splits)
    if len(flash) > 1:
        m["ratio_members"] = [M._noise_floor_from_splits(f, ref, sp).ratio for f, sp in zip(flash, p.member_splits)]
    return m


def _noise_floor_ratios(p: _Pair, thr: dict) -> dict[str, dict]:
    """Per compared variable, and the multiplicity of an object collection: metrics, threshold, pass."""
    variables = {
        v: _member_metrics(p, [f.ev(v, s) for f, s in zip(p.flash, p.sel_f)], p.ref.ev(v, p.sel_r))
        for v in p.common
    }
    if p.ref.jagged:
        variables[f"n{p.name}"] = _member_metrics(p, [f.multiplicity() for f in p.flash], p.ref.multiplicity())
    per_var_thr = thr.get("variables") or {}
    for v, m in variables.items():
        t = per_var_thr.get(v, thr.get("ratio_max"))
        m["threshold"] = t
        m["pass"] = None if t is None or math.isnan(m["ratio"]) else bool(m["ratio"] <= t)
    return variables


def _ratio_summary(variables: dict[str, dict]) -> dict:
    """Median and largest noise-floor ratio of the collection, and the variable with the largest."""
    ratios = np.array([m["ratio"] for m in variables.values()], np.float64)
    finite = ratios[~np.isnan(ratios)]
    if not len(finite):
        return {"median_ratio": float("nan"), "max_ratio": float("nan"), "worst_variable": None}
    return {"median_ratio": float(np.median(finite)), "max_ratio": float(np.max(finite)),
            "worst_variable": list(variables)[int(np.nanargmax(ratios))]}


def _all_objects(p: _Pair) -> dict:
    """For information when only gen-matched objects were compared and some are not: the metrics
    over every object (fakes included) and the matched fractions."""
    if not p.matched_only or p.ref.matched is None or p.fl.matched is None or (p.ref.matched.all() and p.fl.matched.all()):
        return {}
    return {
        "variables_all_objects": {v: _var_metrics(p.fl.ev(v), p.ref.ev(v), p.splits) for v in p.common},
        "matched_fraction": {"flash": float(p.fl.matched.mean()), "reference": float(p.ref.matched.mean())},
    }


# ---- classifier two-sample test and correlations


def _features(p: _Pair, c: _Coll, sel: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Classifier features of the compared objects of one sample, the compared (reco) variables
    first then the gen ones, and the event of each object."""
    cols = [_sel(c.fields[v], sel) for v in p.common]
    cols += [c.gen[g] for g in p.gen_feats]  # gen values are stored for matched objects only
    return np.column_stack(cols), _sel(c.event, sel)


def _classifier(p: _Pair, xf: np.ndarray, evf: np.ndarray, xr: np.ndarray, evr: np.ndarray) -> dict:
    """Classifier two-sample test on (reco + gen) features, beside the same between reference halves."""
    clf = M.classifier_two_sample_test(xf, evf, xr, evr, p.splits[0], seed=p.ctx.seed,
                                       max_rows=p.ctx.classifier_max_rows, n_threads=p.ctx.classifier_threads)
    clf["features"] = list(p.common) + [f"gen_{g}" for g in p.gen_feats]
    return clf


def _correlation(p: _Pair, xf: np.ndarray, xr: np.ndarray, evr: np.ndarray) -> dict:
    """Difference of the reco variables' correlation matrices, beside the same between reference halves."""
    k = len(p.common)
    if k < 2:
        return {}
    d, dmax = M.correlation_difference(xf[:, :k], xr[:, :k])
    s0 = p.splits[0]
    _, dfloor = M.correlation_difference(xr[s0.ref_a[evr], :k], xr[s0.ref_b[evr], :k])
    return {"correlation": {"variables": p.common, "difference": d, "max_abs_diff": dmax,
                            "max_abs_diff_ref_halves": dfloor}}


# ---- checks


def _ratio_checks(res: dict, thr: dict) -> list[dict]:
    """Checks of every variable's noise-floor ratio against its threshold and of the median ratio."""
    checks = []
    if thr.get("ratio_max") is not None or thr.get("variables"):
        failing = [v for v, m in res["variables"].items() if m["pass"] is False]
        checks.append({"name": "noise-floor ratio, every variable", "value": res["max_ratio"],
                       "threshold": thr.get("ratio_max"), "pass": not failing,
                       "detail": ("failing: " + ", ".join(failing)) if failing else f"worst: {res['worst_variable']}"})
    if thr.get("ratio_median") is not None:
        checks.append({"name": "median noise-floor ratio", "value": res["median_ratio"],
                       "threshold": thr["ratio_median"], "pass": bool(res["median_ratio"] <= thr["ratio_median"])})
    return checks


def _auc_check(clf: dict, thr: dict) -> list[dict]:
    """Check of the classifier AUC (none without threshold)."""
    if thr.get("auc_max") is None:
        return []
    auc = clf["auc"]
    return [{"name": "classifier AUC", "value": auc, "threshold": thr["auc_max"],
             "pass": bool(math.isfinite(auc) and auc <= thr["auc_max"]),
             "detail": f"reference halves: {_f(clf['auc_ref_halves'])}"}]


def _response_check(resp: dict | None, thr: dict) -> list[dict]:
    """Check of the pt response's noise-floor ratio (none without threshold or response)."""
    rt = thr.get("response_ratio_max")
    if rt is None or resp is None or "ratio" not in resp:
        return []
    rv = resp["ratio"]["ratio"]
    return [{"name": f"noise-floor ratio of pt {resp['definition']}", "value": rv, "threshold": rt, "pass": bool(rv <= rt)}]


# ---- efficiency, response and resolution


def _efficiency(p: _Pair) -> dict | None:
    """Efficiency vs gen pt and η of a gen-linked object collection, flash beside reference, and in total."""
    fg, rg = p.fl.gen_objects, p.ref.gen_objects
    if not (p.matched_only and rg and fg):
        return None
    p.ctx.progress(f"{p.name}: efficiency and response profiles")
    eff = {f"vs_{x}": _efficiency_profile(p, x, bins)
           for x, bins in (("pt", _log_pt_bins(rg["pt"])), ("eta", _eta_bins(rg["eta"])))}
    eff["total"] = {"flash": float(fg["matched"].mean()) if len(fg["matched"]) else None,
                    "reference": float(rg["matched"].mean()) if len(rg["matched"]) else None}
    return eff


def _efficiency_profile(p: _Pair, x: str, bins: np.ndarray) -> dict:
    """Efficiency vs gen ``x`` of flash and reference, their χ²/ndf; plotted."""
    from flashsim.validate import plots as P

    fg, rg = p.fl.gen_objects, p.ref.gen_objects
    pf = M.efficiency_profile(fg[x], fg["matched"], bins)
    pr = M.efficiency_profile(rg[x], rg["matched"], bins)
    p.plot(f"{p.name}_efficiency_vs_{x}.png", P.plot_profile, {"flashsim": pf, "reference": pr},
           y="efficiency", yerr=("low", "high"), xlabel=f"{p.ref.gen_name} {x}", ylabel=f"{p.name} efficiency",
           logx=(x == "pt"))
    return {"flash": pf, "reference": pr, "chi2_ndf": M.profile_chi2_ndf(
        pf["efficiency"], M._efficiency_err(pf), pr["efficiency"], M._efficiency_err(pr))}


class _Response(NamedTuple):
    """pt response of the compared objects with a usable gen pt: values, gen values, events."""

    values: np.ndarray
    gen: dict[str, np.ndarray]
    event: np.ndarray


def _response_values(c: _Coll, sel: np.ndarray | None, as_ratio: bool) -> _Response:
    """reco pt / gen pt of the objects with gen pt > 0 (as_ratio), else reco pt - gen pt of all."""
    reco = _sel(c.fields["pt"], sel)
    g = c.gen["pt"]
    ok = g > 0 if as_ratio else np.ones(len(g), bool)
    r = reco[ok] / g[ok] if as_ratio else reco - g
    return _Response(r, {k: v[ok] for k, v in c.gen.items()}, _sel(c.event, sel)[ok])


def _response(p: _Pair) -> dict | None:
    """pt response of a gen-linked collection: its noise-floor ratio, distribution and profiles.
    Objects use reco pt / gen pt; event quantities (MET) reco pt - gen pt, since gen MET can be ~0."""
    from flashsim.validate import plots as P

    if not (p.gen_linked and "pt" in p.common and "pt" in p.gen_feats):
        return None
    p.ctx.progress(f"{p.name}: response")
    as_ratio = p.ref.jagged
    resp: dict = {"definition": "reco/gen" if as_ratio else "reco-gen"}
    rlabel = f"{p.name} pt / {p.ref.gen_name} pt" if as_ratio else f"{p.name} pt - {p.ref.gen_name} pt"
    rf = _response_values(p.fl, p.sel_f[0], as_ratio)
    rr = _response_values(p.ref, p.sel_r, as_ratio)
    if len(rf.values) and len(rr.values):
        ref_ev = M.EventValues(rr.values, rr.event, p.ref.n_events)
        resp["ratio"] = _var_metrics(M.EventValues(rf.values, rf.event, p.fl.n_events), ref_ev, p.splits)
        if p.ctx.make_plots:
            b = M.auto_bins(rr.values, rf.values)
            p.plot(f"{p.name}_response.png", P.plot_hist_ratio, rf.values, rr.values, b, xlabel=rlabel,
                   ref_band=p.ref_band(ref_ev, b), annotation=f"R = {_f(resp['ratio']['ratio'], 2)}")
        resp.update(_response_profiles(p, rf, rr, rlabel, as_ratio))
    return resp


def _response_profiles(p: _Pair, rf: _Response, rr: _Response, rlabel: str, as_ratio: bool) -> dict:
    """Median response and resolution (IQR/1.349) vs gen pt and η, flash beside reference, with
    their χ²/ndf; plotted."""
    from flashsim.validate import plots as P

    xs = [("pt", _log_pt_bins(rr.gen["pt"]))]
    if "eta" in rr.gen:
        xs.append(("eta", _eta_bins(rr.gen["eta"])))
    out = {}
    for x, bins in xs:
        pf = M.response_profile(rf.gen[x], rf.values, bins)
        pr = M.response_profile(rr.gen[x], rr.values, bins)
        out[f"vs_{x}"] = {
            "flash": pf, "reference": pr,
            "median_chi2_ndf": M.profile_chi2_ndf(pf["median"], pf["median_err"], pr["median"], pr["median_err"]),
            "resolution_chi2_ndf": M.profile_chi2_ndf(pf["resolution"], pf["resolution_err"], pr["resolution"], pr["resolution_err"]),
        }
        curves = {"flashsim": pf, "reference": pr}
        xlabel = f"{p.ref.gen_name} {x}"
        p.plot(f"{p.name}_response_vs_{x}.png", P.plot_profile, curves, y="median", yerr="median_err",
               xlabel=xlabel, ylabel=f"median of {rlabel}", logx=(x == "pt"), ratio=as_ratio)
        p.plot(f"{p.name}_resolution_vs_{x}.png", P.plot_profile, curves, y="resolution", yerr="resolution_err",
               xlabel=xlabel, ylabel=f"IQR/1.349 of {rlabel}", logx=(x == "pt"))
    return out


# ---- gen flavour / status classes and tagger ROCs


def _flavour(c: _Coll, sel: np.ndarray | None, gen_linked: bool) -> np.ndarray | None:
    """Hadron flavour of the compared objects: the gen object's when linked, else the reco field's."""
    if gen_linked and "hadronFlavour" in c.gen:
        return c.gen["hadronFlavour"]
    if "hadronFlavour" in c.fields:
        return _sel(c.fields["hadronFlavour"], sel)
    return None


def _categories(p: _Pair) -> dict | None:
    """Classes to split distributions by: gen hadron flavour for jets (b, c, light), prompt vs
    non-prompt (GenPart statusFlags bit 0) for gen-particle-matched leptons/photons."""
    fl, ref = p.fl, p.ref
    if not ref.jagged:
        return None
    ff, fr = _flavour(fl, p.sel_f[0], p.gen_linked), _flavour(ref, p.sel_r, p.gen_linked)
    if ff is not None and fr is not None:
        return {"by": "hadronFlavour", "classes": {k: (ff == v, fr == v) for k, v in _FLAVOURS.items()}, "flf": ff, "flr": fr}
    if p.gen_linked and "statusFlags" in fl.gen and "statusFlags" in ref.gen:
        pf = (fl.gen["statusFlags"].astype(np.int64) & 1) == 1
        pr = (ref.gen["statusFlags"].astype(np.int64) & 1) == 1
        return {"by": "isPrompt", "classes": {"prompt": (pf, pr), "non-prompt": (~pf, ~pr)}}
    return None


def _by_category(p: _Pair) -> dict:
    """Per gen class: noise-floor ratios and plotted distributions; tagger ROCs for jets."""
    cats = _categories(p)
    if not cats:
        return {}
    p.ctx.progress(f"{p.name}: distributions by {cats['by']}")
    out: dict = {"by_category": {"by": cats["by"], "ratios": _category_ratios(p, cats)}}
    _category_plots(p, cats)
    if cats["by"] == "hadronFlavour":
        out["roc"] = _rocs(p, cats)
    return out


def _category_ratios(p: _Pair, cats: dict) -> dict[str, dict]:
    """Each variable's metrics within each class (where both samples have objects of it)."""
    by: dict[str, dict] = {}
    for cname, (mf, mr) in cats["classes"].items():
        by[cname] = {}
        for v in p.common:
            f_ev = _subset(p.fl.ev(v, p.sel_f[0]), mf)
            r_ev = _subset(p.ref.ev(v, p.sel_r), mr)
            if len(f_ev.values) and len(r_ev.values):
                by[cname][v] = _var_metrics(f_ev, r_ev, p.splits)
    return by


def _category_plots(p: _Pair, cats: dict) -> None:
    """Distributions of pt and of the first b-tagger, one flash/reference pair per class."""
    from flashsim.validate import plots as P

    for v in [v for v in ("pt",) if v in p.common] + [v for v in p.common if v.startswith("btag")][:1]:
        fv, rv = _sel(p.fl.fields[v], p.sel_f[0]), _sel(p.ref.fields[v], p.sel_r)
        groups = {c: (fv[mf], rv[mr]) for c, (mf, mr) in cats["classes"].items() if mf.any() and mr.any()}
        if groups:
            p.plot(f"{p.name}_{v}_by_{cats['by']}.png", P.plot_overlay, groups, M.auto_bins(rv, fv),
                   xlabel=f"{p.name} {v}", logy=v.startswith("btag"))


def _rocs(p: _Pair, cats: dict) -> dict:
    """Per b-tagger and flavour pair: ROC and AUC of flash beside reference; curves plotted."""
    from flashsim.validate import plots as P

    out: dict[str, Any] = {}
    for t in [v for v in p.common if v.startswith("btag")]:
        sc_f, sc_r = _sel(p.fl.fields[t], p.sel_f[0]), _sel(p.ref.fields[t], p.sel_r)
        out[t] = {}
        curves = {}
        for pair, (sig, bkg) in M.FLAVOUR_PAIRS.items():
            rf = M.roc_by_flavour(sc_f, cats["flf"], sig, bkg)
            rr = M.roc_by_flavour(sc_r, cats["flr"], sig, bkg)
            out[t][pair] = {"auc_flash": rf["auc"], "auc_reference": rr["auc"],
                            "delta_auc": rf["auc"] - rr["auc"], "flash": rf, "reference": rr}
            if pair != "b_vs_c" and math.isfinite(rf["auc"]) and math.isfinite(rr["auc"]):
                curves[f"{pair.replace('_', ' ')} flashsim"] = rf
                curves[f"{pair.replace('_', ' ')} reference"] = rr
        if curves:
            p.plot(f"{p.name}_roc_{t}.png", P.plot_roc, curves, title=f"{p.name} {t}")
    return out


# ---- per-variable distributions and corner plot


def _distribution_plots(p: _Pair, variables: dict[str, dict]) -> None:
    """Each compared variable's distribution, and the multiplicity's for an object collection."""
    suffix = " (gen-matched)" if p.matched_only else ""
    for v in p.common:
        fvals = [_sel(f.fields[v], s) for f, s in zip(p.flash, p.sel_f)]
        _distribution_plot(p, v, fvals, p.ref.ev(v, p.sel_r), f"{p.name} {v}{suffix}", variables[v])
    if p.ref.jagged:
        mult = f"n{p.name}"
        fvals = [f.multiplicity().values for f in p.flash]
        _distribution_plot(p, mult, fvals, p.ref.multiplicity(), f"number of {p.name}", variables[mult])


def _distribution_plot(p: _Pair, v: str, fvals: list[np.ndarray], rev: M.EventValues, xlabel: str, m: dict) -> None:
    """Flash over reference with the reference's bootstrap band, the ensemble's spread and R and KS."""
    from flashsim.validate import plots as P

    b = M.auto_bins(rev.values, fvals[0])
    band = p.ref_band(rev, b)
    ens = M.ensemble_band(fvals, b) if len(fvals) > 1 else None
    note = f"R = {_f(m['ratio'], 2)}  KS = {_f(m['ks'], 3)}"
    logy = v.startswith(("btag", "pfRelIso", "miniPFRelIso")) or "Iso" in v
    p.plot(f"{p.name}_{v}.png", P.plot_hist_ratio, fvals[0], rev.values, b, xlabel=xlabel,
           ref_band=band, ensemble=ens, annotation=note, logy=logy)


def _corner_plot(p: _Pair, xf: np.ndarray, xr: np.ndarray) -> None:
    """Corner plot of up to five compared variables (pt, eta, phi, mass first), 20000 objects at most."""
    from flashsim.validate import plots as P

    names = [v for v in _CORNER_FIRST if v in p.common]
    names += [v for v in p.common if v not in names][: max(0, 5 - len(names))]
    if len(names) < 2:
        return
    idx = [p.common.index(v) for v in names]
    rng = np.random.default_rng(p.ctx.seed)
    cf = xf[rng.permutation(len(xf))[:20000]][:, idx]
    cr = xr[rng.permutation(len(xr))[:20000]][:, idx]
    p.plot(f"{p.name}_corner.png", P.plot_corner, cf, cr, [f"{p.name} {v}" for v in names])


def _plots_in_order(name: str, variables: dict[str, dict], plots: list[str]) -> list[str]:
    """Per-variable distributions first, in the variables' order, then profiles, ROCs and the rest."""
    first = [q for v in variables for q in plots if q == f"plots/{name}_{v}.png"]
    return first + [q for q in plots if q not in first]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def validate(
    flash: ak.Array | Sequence[ak.Array],
    reference: ak.Array,
    collections: Sequence[str],
    out_dir: Path | str,
    thresholds: Mapping | None = None,
    *,
    n_splits: int = 8,
    seed: int = 0,
    paired: bool | None = None,
    n_bootstrap: int = 50,
    classifier_max_rows: int = 20000,
    classifier_threads: int | None = 1,
    make_plots: bool = True,
    progress: Callable[[str], None] | None = None,
    title: str = "flashsim validation",
    analyses: Sequence[AnalysisSpec] = (),
) -> dict:
    """Compare flash events to reference events collection by collection and analysis by analysis;
    write ``plots/*.png``, ``metrics.json`` and ``report.html`` into ``out_dir``; return the metrics.

    flash: one event array, or a list of K (K trainings) whose bin-by-bin spread is drawn as a
        systematic band; the metrics are those of the first, with every member's ratios beside.
    paired: flash and reference share GEN events (default: detected from run/event numbers or
        identical gen collections). Paired uses half-splits of the events; independent samples use
        reference halves of the flash sample's size.
    thresholds: overrides of :data:`DEFAULT_THRESHOLDS`, globally or per collection
        (``{"Jet": {"ratio_max": 3, "variables": {"jetId": 5}}}``).
    analyses: analysis specs run on the (first) flash sample and the reference: cut flows with
        pulls and observable shapes, reported beside the collections (they pass or fail nothing).
    """
    progress = progress or (lambda _msg: None)
    flashes = [flash] if isinstance(flash, ak.Array) else list(flash)
    if not flashes:
        raise ValidationInputError("no flash sample given")
    if isinstance(collections, str):
        collections = [c.strip() for c in collections.split(",") if c.strip()]
    if not collections and not analyses:
        raise ValidationInputError("no collection or analysis to validate")
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    if paired is None:
        paired = all(_is_paired(f, reference) for f in flashes)
    elif paired and any(len(f) != len(reference) for f in flashes):
        raise ValidationInputError(
            f"paired=True needs flash and reference of equal length, got {[len(f) for f in flashes]} and {len(reference)}"
        )
    ctx = _Ctx(out_dir, plot_dir, n_splits, seed, paired, n_bootstrap, classifier_max_rows, classifier_threads,
               make_plots, progress)
    # resolve thresholds (errors early on typos)
    thr_by = {c: resolve_thresholds(thresholds, c) for c in collections}
    result: dict = {
        "title": title,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "collections": list(collections), "n_splits": n_splits, "seed": seed, "paired": paired,
            "n_events_flash": [len(f) for f in flashes], "n_events_reference": len(reference),
            "n_bootstrap": n_bootstrap, "classifier_max_rows": classifier_max_rows,
            "thresholds": {c: thr_by[c] for c in collections}, "analyses": [a.name for a in analyses],
        },
        "collections": {},
    }
    # check every collection before the slow part, so a typo fails at once
    for c in collections:
        for i, f in enumerate(flashes):
            _get_collection(f, c, "flash" if len(flashes) == 1 else f"flash[{i}]")
        _get_collection(reference, c, "reference")
    for c in collections:
        progress(f"{c}: reading columns")
        ref_c = _extract(reference, c, "reference")
        _attach_gen(ref_c, reference, reference)
        fl_c = []
        for i, f in enumerate(flashes):
            lab = "flash" if len(flashes) == 1 else f"flash[{i}]"
            fc = _extract(f, c, lab)
            # flash carries no gen collection in a paired comparison: borrow the reference's
            _attach_gen(fc, f, f if _has_gen(f, c) or not paired else reference)
            fl_c.append(fc)
        result["collections"][c] = _validate_collection(c, fl_c, ref_c, thr_by[c], ctx)
    if analyses:
        from flashsim.validate.analysis import compare_analysis

        result["analyses"] = {}
        for spec in analyses:
            progress(f"analysis {spec.name}: cut flow and observables")
            result["analyses"][spec.name] = compare_analysis(spec, flashes[0], reference, paired=paired,
                                                             out_dir=out_dir if make_plots else None)
    result["pass"] = all(r["pass"] for r in result["collections"].values())
    result = jsonable(result)
    progress("writing metrics.json and report.html")
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=1))
    atomic_write_text(out_dir / "report.html", _html(result, out_dir))
    result["files"] = {"html": str(out_dir / "report.html"), "metrics": str(out_dir / "metrics.json")}
    return result


def _has_gen(events: ak.Array, coll: str) -> bool:
    fields = set(events.fields or [])
    c = events[coll]
    if c.ndim == 2:
        return any(k in (c.fields or []) and g in fields for k, g in GEN_LINKS.items())
    return EVENT_GEN.get(coll) in fields


def metrics_dataframe(metrics: Mapping):
    """One row per (collection, variable): ratio, W1, KS, threshold, pass. Needs pandas."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover
        raise ImportError("metrics_dataframe needs pandas: pip install pandas") from exc
    rows = []
    for c, r in metrics["collections"].items():
        for v, m in r["variables"].items():
            rows.append({"collection": c, "variable": v, "selection": r.get("selection"),
                         **{k: m.get(k) for k in ("ratio", "w1", "ks", "w1_flash_sum", "w1_floor_sum",
                                                  "n_flash", "n_reference", "threshold", "pass")}})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 18px 0;font-size:14px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
.pass{background:#dff3e0;color:#17612a;font-weight:600} .fail{background:#fbe0e0;color:#9b1c1c;font-weight:600}
.na{color:#888} .grid{display:flex;flex-wrap:wrap;gap:6px} .grid img{width:380px;border:1px solid #eee} .grid img:hover{width:760px}
details{margin:6px 0 14px 0} summary{cursor:pointer;font-weight:600}
.note{font-size:13px;color:#555;max-width:1100px}
"""


def _badge(ok) -> str:
    if ok is None:
        return '<td class="na">n/a</td>'
    return '<td class="pass">PASS</td>' if ok else '<td class="fail">FAIL</td>'


def _img(out_dir: Path, rel: str) -> str:
    data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(rel)}" title="{html.escape(rel)}">'


def _html(res: dict, out_dir: Path) -> str:
    """The self-contained report page: a header, the summary table, then one section per collection."""
    parts = _html_header(res) + (_html_summary(res) if res["collections"] else []) + _html_analysis_summary(res.get("analyses", {}))
    for c, r in res["collections"].items():
        parts += _html_collection(c, r, out_dir)
    for a in res.get("analyses", {}).values():
        parts += _html_analysis(a, out_dir)
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_header(res: dict) -> list[str]:
    """Title, verdict, the run's configuration and how to read the numbers."""
    e = html.escape
    cfg = res["config"]
    mode = "paired (flash and reference share GEN events)" if cfg["paired"] else "independent samples"
    return [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(res['title'])}</title>"
            f"<style>{_CSS}</style></head><body>",
            f"<h1>{e(res['title'])}{(' — PASS' if res['pass'] else ' — FAIL') if res['collections'] else ''}</h1>",
            f"<p class='sub'>{e(res['created'])} · flash events {cfg['n_events_flash']} · reference events "
            f"{cfg['n_events_reference']} · {e(mode)} · {cfg['n_splits']} event splits · seed {cfg['seed']}</p>",
            *([] if not res["collections"] else ["<p class='note'>Noise-floor ratio R = Σ W1(flash, ref<sub>B</sub>) / Σ W1(ref<sub>A</sub>, ref<sub>B</sub>)"
            " over random event splits: 1 is as close as two halves of the reference; the median R is the headline. "
            "The classifier AUC (0.5 = indistinguishable) is shown beside the same test between two reference halves. "
            "Grey bands: reference bootstrap 68%; orange: spread of the flash ensemble.</p>"])]


def _html_summary(res: dict) -> list[str]:
    """One row per collection: ratios, classifier AUC and verdict."""
    e = html.escape
    parts = ["<h2>Summary</h2><table><tr><th class='l'>collection</th><th>variables</th><th>median R</th>"
             "<th>max R (variable)</th><th>AUC</th><th>AUC ref halves</th><th>result</th></tr>"]
    for c, r in res["collections"].items():
        clf = r.get("classifier", {})
        parts.append(f"<tr><td class='l'><a href='#{e(c)}'>{e(c)}</a></td><td>{len(r['variables'])}</td>"
                     f"<td>{_f(r['median_ratio'], 2)}</td><td>{_f(r['max_ratio'], 2)} ({e(str(r['worst_variable']))})</td>"
                     f"<td>{_f(clf.get('auc'))}</td><td>{_f(clf.get('auc_ref_halves'))}</td>{_badge(r['pass'])}</tr>")
    parts.append("</table>")
    return parts


def _html_collection(c: str, r: dict, out_dir: Path) -> list[str]:
    """One collection's section: what was compared, checks, variables, profiles, ROCs, classes, plots."""
    e = html.escape
    parts = [f"<h2 id='{e(c)}'>{e(c)}</h2>", *_html_info(r), *_html_checks(r["checks"]), *_html_variables(r),
             *_html_notes(r), *_html_rocs(r.get("roc")), *_html_by_category(r.get("by_category"))]
    if r["plots"]:
        parts.append("<div class='grid'>" + "".join(_img(out_dir, p) for p in r["plots"]) + "</div>")
    return parts


def _html_info(r: dict) -> list[str]:
    """Kind, compared objects, gen link and matched fractions; the variables not compared."""
    e = html.escape
    info = [f"kind: {r['kind']}", f"compared objects: {r['selection']}"]
    if r.get("gen_link"):
        info.append(f"gen link: {r['gen_link']}")
    if r.get("matched_fraction"):
        mf = r["matched_fraction"]
        info.append(f"matched fraction flash {_f(mf['flash'])} / reference {_f(mf['reference'])}")
    parts = [f"<p class='sub'>{e(' · '.join(info))}</p>"]
    nc = r["not_compared"]
    if nc["only_in_reference"] or nc["only_in_flash"] or nc["non_numeric"]:
        parts.append("<p class='note'>not compared — only in reference: "
                     f"{e(', '.join(nc['only_in_reference']) or 'none')}; only in flash: "
                     f"{e(', '.join(nc['only_in_flash']) or 'none')}; non-numeric: {e(', '.join(nc['non_numeric']) or 'none')}</p>")
    return parts


def _html_checks(checks: list[dict]) -> list[str]:
    """The pass/fail checks table."""
    e = html.escape
    parts = ["<table><tr><th class='l'>check</th><th>value</th><th>threshold</th><th>result</th><th class='l'>detail</th></tr>"]
    for ch in checks:
        parts.append(f"<tr><td class='l'>{e(ch['name'])}</td><td>{_f(ch['value'])}</td><td>{_f(ch['threshold'])}</td>"
                     f"{_badge(ch['pass'])}<td class='l'>{e(ch.get('detail', ''))}</td></tr>")
    parts.append("</table>")
    return parts


def _html_variables(r: dict) -> list[str]:
    """The per-variable table, worst noise-floor ratio first."""
    e = html.escape
    members = any("ratio_members" in m for m in r["variables"].values())
    parts = ["<table><tr><th class='l'>variable</th><th>R</th><th>Σ W1 flash</th><th>Σ W1 floor</th>"
             "<th>W1</th><th>KS</th><th>n flash</th><th>n ref</th>"
             + ("<th>R per training</th>" if members else "") + "<th>R all objects</th><th>threshold</th><th>result</th></tr>"]
    allobj = r.get("variables_all_objects", {})
    order = sorted(r["variables"].items(), key=lambda kv: -(kv[1]["ratio"] if kv[1]["ratio"] is not None else math.inf))
    for v, m in order:
        mem = ("<td>" + " ".join(_f(x, 2) for x in m.get("ratio_members", [])) + "</td>") if members else ""
        parts.append(f"<tr><td class='l'>{e(v)}</td><td>{_f(m['ratio'], 2)}</td><td>{_f(m['w1_flash_sum'], 4)}</td>"
                     f"<td>{_f(m['w1_floor_sum'], 4)}</td><td>{_f(m['w1'], 4)}</td><td>{_f(m['ks'])}</td>"
                     f"<td>{m['n_flash']}</td><td>{m['n_reference']}</td>{mem}"
                     f"<td>{_f(allobj.get(v, {}).get('ratio'), 2)}</td><td>{_f(m['threshold'], 2)}</td>{_badge(m['pass'])}</tr>")
    parts.append("</table>")
    return parts


def _html_notes(r: dict) -> list[str]:
    """One line each for the correlations, efficiency and response, where measured."""
    extra = []
    if "correlation" in r:
        co = r["correlation"]
        extra.append(f"max |Δ correlation| {_f(co['max_abs_diff'])} (reference halves {_f(co['max_abs_diff_ref_halves'])})")
    if "efficiency" in r:
        ef = r["efficiency"]
        extra.append(f"efficiency flash {_f(ef['total']['flash'])} / reference {_f(ef['total']['reference'])}; "
                     f"χ²/ndf vs pt {_f(ef['vs_pt']['chi2_ndf'], 2)}, vs η {_f(ef['vs_eta']['chi2_ndf'], 2)}")
    if r.get("response", {}).get("vs_pt"):
        rp = r["response"]
        extra.append(f"response R {_f(rp['ratio']['ratio'], 2)}; median χ²/ndf vs pt {_f(rp['vs_pt']['median_chi2_ndf'], 2)}; "
                     f"resolution χ²/ndf vs pt {_f(rp['vs_pt']['resolution_chi2_ndf'], 2)}")
    if not extra:
        return []
    return ["<ul class='note'>" + "".join(f"<li>{html.escape(x)}</li>" for x in extra) + "</ul>"]


def _html_rocs(roc: dict | None) -> list[str]:
    """Tagger AUCs per flavour pair, flash beside reference."""
    e = html.escape
    if not roc:
        return []
    parts = ["<table><tr><th class='l'>tagger</th><th class='l'>pair</th><th>AUC flash</th><th>AUC reference</th><th>Δ</th></tr>"]
    for t, pairs in roc.items():
        for p, d in pairs.items():
            parts.append(f"<tr><td class='l'>{e(t)}</td><td class='l'>{e(p)}</td><td>{_f(d['auc_flash'])}</td>"
                         f"<td>{_f(d['auc_reference'])}</td><td>{_f(d['delta_auc'])}</td></tr>")
    parts.append("</table>")
    return parts


def _html_by_category(bc: dict | None) -> list[str]:
    """Noise-floor ratios per variable and gen class, folded."""
    e = html.escape
    if not bc:
        return []
    classes = list(bc["ratios"])
    vs = sorted({v for d in bc["ratios"].values() for v in d})
    parts = [f"<details><summary>noise-floor ratio by {e(bc['by'])}</summary><table><tr><th class='l'>variable</th>"
             + "".join(f"<th>{e(k)}</th>" for k in classes) + "</tr>"]
    for v in vs:
        parts.append(f"<tr><td class='l'>{e(v)}</td>" + "".join(
            f"<td>{_f(bc['ratios'][k].get(v, {}).get('ratio'), 2)}</td>" for k in classes) + "</tr>")
    parts.append("</table></details>")
    return parts


def _html_analysis_summary(analyses: dict) -> list[str]:
    """One row per analysis: the yields after the last cut, their pulls, the largest |pull| and shape χ²/ndf."""
    e = html.escape
    if not analyses:
        return []
    parts = ["<h2>Analyses</h2><table><tr><th class='l'>analysis</th><th>selected flash</th><th>selected ref</th>"
             "<th>flash / ref</th><th>pull</th><th>paired pull</th><th>max |pull| (cut flow)</th><th>max χ²/ndf (shapes)</th></tr>"]
    for name, a in analyses.items():
        last = a["cutflow"][-1]
        parts.append(f"<tr><td class='l'><a href='#analysis-{e(name)}'>{e(name)}</a></td>"
                     f"<td>{_pm(last['yield_flash'], last['yield_flash_err'])}</td><td>{_pm(last['yield_reference'], last['yield_reference_err'])}</td>"
                     f"<td>{_f(last['ratio'])}</td><td>{_f(last['pull'], 2)}</td><td>{_f(last.get('pull_paired'), 2)}</td>"
                     f"<td>{_f(a['max_abs_pull'], 2)}</td><td>{_f(a['max_chi2_ndf'], 2)}</td></tr>")
    parts.append("</table>")
    return parts


def _pm(value: float, err: float) -> str:
    return f"{_f(value, 1)} ± {_f(err, 1)}"


def _html_analysis(a: dict, out_dir: Path) -> list[str]:
    """One analysis: its cut flow with yields and pulls, its observables' χ²/ndf, notes and plots."""
    e = html.escape
    paired = a["paired"]
    w = a["weights"]
    parts = [f"<h2 id='analysis-{e(a['name'])}'>analysis {e(a['name'])}</h2>",
             f"<p class='sub'>{e(a['description'])}<br>{e(a['reference'])} · spec {e(a['spec'])} · weights: flash "
             f"{e(', '.join(w['flash']) or 'none')}, reference {e(', '.join(w['reference']) or 'none')}</p>",
             "<p class='note'>Yields are sums of weights ± sqrt(sum of squared weights); pull = (flash − reference) / "
             "sqrt(σ<sub>flash</sub>² + σ<sub>ref</sub>²)" + ("; the paired pull divides by the spread of the per-event "
             "differences, as flash and reference share their GEN events (which also makes the shape χ²/ndf, computed as "
             "for independent samples, smaller than 1 for a perfect model)" if paired else "") + ". Shapes are normalised to "
             "unit area; the χ² uses bins with entries and is only χ²-distributed with several entries per bin.</p>",
             "<table><tr><th class='l'>cut</th><th>events flash</th><th>events ref</th><th>yield flash</th>"
             "<th>yield ref</th><th>flash / ref</th><th>pull</th>" + ("<th>paired pull</th>" if paired else "") + "</tr>"]
    for row in a["cutflow"]:
        parts.append(f"<tr><td class='l' title='{e(row['expression'])}'>{e(row['cut'])}</td><td>{row['events_flash']}</td>"
                     f"<td>{row['events_reference']}</td><td>{_pm(row['yield_flash'], row['yield_flash_err'])}</td>"
                     f"<td>{_pm(row['yield_reference'], row['yield_reference_err'])}</td><td>{_f(row['ratio'])}</td>"
                     f"<td>{_f(row['pull'], 2)}</td>" + (f"<td>{_f(row.get('pull_paired'), 2)}</td>" if paired else "") + "</tr>")
    parts.append("</table><table><tr><th class='l'>observable</th><th class='l'>expression</th><th>entries flash</th>"
                 "<th>entries ref</th><th>χ²/ndf (shape)</th><th>ndf</th></tr>")
    for name, o in a["observables"].items():
        parts.append(f"<tr><td class='l'>{e(name)}</td><td class='l'>{e(o['expression'])}</td><td>{o['flash']['entries']}</td>"
                     f"<td>{o['reference']['entries']}</td><td>{_f(o['chi2_ndf'], 2)}</td><td>{o['ndf']}</td></tr>")
    parts.append("</table>")
    if a["notes"]:
        parts.append("<ul class='note'>" + "".join(f"<li>{e(n)}</li>" for n in a["notes"]) + "</ul>")
    plots = [o["plot"] for o in a["observables"].values() if "plot" in o]
    if plots:
        parts.append("<div class='grid'>" + "".join(_img(out_dir, p) for p in plots) + "</div>")
    return parts
