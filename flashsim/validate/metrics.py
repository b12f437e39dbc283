"""Fidelity metrics for flashsim: distances, the noise-floor ratio, classifier two-sample tests,
response/resolution/efficiency profiles, tagger ROCs and uncertainty bands.

Every function takes plain NumPy arrays (or per-event awkward arrays where said) so that it can be
used outside the report. Values of jagged collections are handled as a flat array of object values
plus the index of the event each object belongs to: splits and bootstraps are always done by
*event*, because objects of one event are correlated.

The noise-floor ratio follows DESIGN.md ("Measuring fidelity without chasing noise"):

    R = sum_s W1(flash[A_s], ref[B_s]) / sum_s W1(ref[A_s], ref[B_s])

over ``n_splits`` random event splits (A_s, B_s). A perfect model gives R ~ 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import awkward as ak
import numpy as np
from scipy import stats

from flashsim.errors import InputError

__all__ = [
    "EventValues",
    "NoiseFloorResult",
    "as_event_values",
    "wasserstein",
    "ks_distance",
    "event_splits",
    "noise_floor_ratio",
    "noise_floor_ratio_independent",
    "noise_floor_ratios",
    "classifier_auc",
    "classifier_two_sample_test",
    "correlation_matrix",
    "correlation_difference",
    "response_profile",
    "efficiency_profile",
    "profile_chi2_ndf",
    "weighted_yield",
    "yield_pull",
    "paired_pull",
    "shape_chi2",
    "matched_mask",
    "gather_matched",
    "roc_by_flavour",
    "FLAVOUR_PAIRS",
    "bootstrap_band",
    "ensemble_band",
    "auto_bins",
]


# --------------------------------------------------------------------------------------------
# Event-indexed values
# --------------------------------------------------------------------------------------------


@dataclass
class EventValues:
    """Flat values of one variable with the event index of each entry (``event`` in [0, n_events))."""

    values: np.ndarray
    event: np.ndarray
    n_events: int

    def select_events(self, event_mask: np.ndarray) -> np.ndarray:
        """Values of the objects in the events where ``event_mask`` is True."""
        return self.values[event_mask[self.event]]


def as_event_values(x: ak.Array | np.ndarray | EventValues | Sequence) -> EventValues:
    """Turn a per-event array (1-D: one value per event; jagged: a list of values per event)
    into :class:`EventValues`."""
    if isinstance(x, EventValues):
        return x
    if isinstance(x, np.ndarray) and x.ndim == 1:
        return EventValues(x, np.arange(len(x)), len(x))
    arr = x if isinstance(x, ak.Array) else ak.Array(x)
    if arr.ndim == 1:
        vals = ak.to_numpy(arr)
        return EventValues(np.asarray(vals), np.arange(len(vals)), len(vals))
    if arr.ndim == 2:
        counts = ak.to_numpy(ak.num(arr, axis=1))
        vals = ak.to_numpy(ak.flatten(arr, axis=1))
        return EventValues(np.asarray(vals), np.repeat(np.arange(len(arr)), counts), len(arr))
    raise ValueError(f"expected a 1-D or jagged 2-D array, got ndim={arr.ndim}")


# --------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 (earth mover's) distance between two 1-D samples (scipy)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(stats.wasserstein_distance(a, b))


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance (largest CDF difference) between two 1-D samples."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(stats.ks_2samp(a, b).statistic)


# --------------------------------------------------------------------------------------------
# Noise-floor ratio
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Event masks of one split: flash events compared to ``ref_b``; the floor is ``ref_a`` vs ``ref_b``."""

    flash: np.ndarray
    ref_a: np.ndarray
    ref_b: np.ndarray


def event_splits(
    n_flash: int, n_ref: int, *, paired: bool, n_splits: int = 8, seed: int = 0
) -> list[Split]:
    """Random event splits for the noise floor.

    paired: flash and reference share GEN events (``n_flash == n_ref``); each split halves the
    events into A and B: flash on A, reference on A (floor) and reference on B.
    independent: flash keeps n = min(n_flash, n_ref // 2) events; the reference gives two disjoint
    random halves A and B of n events each, so numerator and floor have the same statistics.
    """
    rng = np.random.default_rng(seed)
    splits = []
    if paired:
        if n_flash != n_ref:
            raise InputError(f"paired samples need the same number of events, got {n_flash} (flash) and {n_ref} (reference)")
        if n_flash < 2:
            raise InputError(f"need at least 2 events to split, the samples have {n_flash}")
        for _ in range(n_splits):
            perm = rng.permutation(n_flash)
            a = np.zeros(n_flash, bool)
            a[perm[: n_flash // 2]] = True
            splits.append(Split(flash=a, ref_a=a, ref_b=~a))
        return splits
    n = min(n_flash, n_ref // 2)
    if n < 1:
        raise InputError(f"independent noise floor needs >= 2 reference events and 1 flash event, got {n_ref} and {n_flash}")
    for _ in range(n_splits):
        perm = rng.permutation(n_ref)
        ra = np.zeros(n_ref, bool)
        rb = np.zeros(n_ref, bool)
        ra[perm[:n]] = True
        rb[perm[n : 2 * n]] = True
        fm = np.zeros(n_flash, bool)
        fm[rng.permutation(n_flash)[:n]] = True
        splits.append(Split(flash=fm, ref_a=ra, ref_b=rb))
    return splits


@dataclass
class NoiseFloorResult:
    """R = w1_flash / w1_floor with both summed over ``n_splits`` event splits."""

    ratio: float
    w1_flash: float
    w1_floor: float
    n_splits: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    if num == 0:
        return 1.0  # both identical constants: as good as the floor
    return float("inf")


def _noise_floor_from_splits(flash: EventValues, ref: EventValues, splits: list[Split]) -> NoiseFloorResult:
    num = den = 0.0
    used = 0
    for s in splits:
        f = flash.select_events(s.flash)
        ra = ref.select_events(s.ref_a)
        rb = ref.select_events(s.ref_b)
        if len(f) == 0 or len(ra) == 0 or len(rb) == 0:
            continue
        num += wasserstein(f, rb)
        den += wasserstein(ra, rb)
        used += 1
    if used == 0:
        return NoiseFloorResult(float("nan"), float("nan"), float("nan"), 0)
    return NoiseFloorResult(_ratio(num, den), num, den, used)


def noise_floor_ratio(flash, reference, *, n_splits: int = 8, seed: int = 0) -> NoiseFloorResult:
    """Noise-floor ratio for flash and reference that share GEN events (event i of both comes
    from the same GEN event). Inputs are per-event arrays (1-D or jagged) or :class:`EventValues`."""
    f, r = as_event_values(flash), as_event_values(reference)
    splits = event_splits(f.n_events, r.n_events, paired=True, n_splits=n_splits, seed=seed)
    return _noise_floor_from_splits(f, r, splits)


def noise_floor_ratio_independent(flash, reference, *, n_splits: int = 8, seed: int = 0) -> NoiseFloorResult:
    """Noise-floor ratio for independent samples: reference halves of the flash sample's size
    (the reference should hold at least twice the flash events, else flash is subsampled)."""
    f, r = as_event_values(flash), as_event_values(reference)
    splits = event_splits(f.n_events, r.n_events, paired=False, n_splits=n_splits, seed=seed)
    return _noise_floor_from_splits(f, r, splits)


def noise_floor_ratios(
    flash: dict[str, EventValues], reference: dict[str, EventValues], splits: list[Split]
) -> dict[str, NoiseFloorResult]:
    """Noise-floor ratios of many variables with the same splits (the variables of one collection)."""
    return {k: _noise_floor_from_splits(flash[k], reference[k], splits) for k in flash}


# --------------------------------------------------------------------------------------------
# Classifier two-sample test
# --------------------------------------------------------------------------------------------


def classifier_auc(
    x0: np.ndarray,
    x1: np.ndarray,
    *,
    groups0: np.ndarray | None = None,
    groups1: np.ndarray | None = None,
    n_folds: int = 5,
    seed: int = 0,
    max_rows: int | None = 20000,
    n_threads: int | None = 1,
) -> float:
    """Cross-validated ROC AUC of a HistGradientBoostingClassifier separating sample 0 from sample 1.

    0.5 means indistinguishable. Rows sharing a group (an event) stay in the same fold, so the
    classifier cannot learn an event by heart. Each class is subsampled to ``max_rows`` rows.
    The AUC is the mean of the per-fold AUCs. ``n_threads`` caps the OpenMP threads of the
    boosting (1 by default: on shared cores, OpenMP threads that wait on each other are 10-20x
    slower than one thread); None uses them all.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_threads, user_api="openmp"):
        return _classifier_auc(x0, x1, groups0, groups1, n_folds, seed, max_rows)


def _classifier_auc(x0, x1, groups0, groups1, n_folds: int, seed: int, max_rows: int | None) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(seed)
    x0 = np.asarray(x0, dtype=np.float64).reshape(len(x0), -1)
    x1 = np.asarray(x1, dtype=np.float64).reshape(len(x1), -1)
    g0 = np.arange(len(x0)) if groups0 is None else np.asarray(groups0, np.int64)
    g1 = np.arange(len(x1)) if groups1 is None else np.asarray(groups1, np.int64)
    g1 = g1 + (int(g0.max()) + 1 if len(g0) else 0)  # the two samples never share a group
    if max_rows is not None:
        if len(x0) > max_rows:
            keep = np.sort(rng.choice(len(x0), max_rows, replace=False))
            x0, g0 = x0[keep], g0[keep]
        if len(x1) > max_rows:
            keep = np.sort(rng.choice(len(x1), max_rows, replace=False))
            x1, g1 = x1[keep], g1[keep]
    if min(len(x0), len(x1)) < 2 * n_folds:
        return float("nan")
    x = np.concatenate([x0, x1])
    y = np.concatenate([np.zeros(len(x0), int), np.ones(len(x1), int)])
    g = np.concatenate([g0, g1])
    # shuffle the group labels so GroupKFold's balancing does not follow event order
    _, g = np.unique(g, return_inverse=True)
    g = rng.permutation(g.max() + 1)[g]
    n_folds = min(n_folds, len(np.unique(g)))
    aucs = []
    for train, test in GroupKFold(n_splits=n_folds).split(x, y, g):
        if len(np.unique(y[test])) < 2 or len(np.unique(y[train])) < 2:
            continue
        clf = HistGradientBoostingClassifier(
            max_iter=200,
            learning_rate=0.1,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            early_stopping=True,
            validation_fraction=0.2,
            n_iter_no_change=10,
            random_state=int(rng.integers(2**31 - 1)),
        )
        clf.fit(x[train], y[train])
        aucs.append(roc_auc_score(y[test], clf.predict_proba(x[test])[:, 1]))
    return float(np.mean(aucs)) if aucs else float("nan")


def classifier_two_sample_test(
    flash_x: np.ndarray,
    flash_event: np.ndarray,
    ref_x: np.ndarray,
    ref_event: np.ndarray,
    split: Split,
    *,
    n_folds: int = 5,
    seed: int = 0,
    max_rows: int | None = 20000,
    n_threads: int | None = 1,
) -> dict:
    """Classifier AUC of flash (events of ``split.flash``) vs reference (``split.ref_b``), beside the
    same test between the two reference halves (``split.ref_a`` vs ``split.ref_b``): the AUC means
    something only next to that floor."""
    fa = split.flash[flash_event]
    ra = split.ref_a[ref_event]
    rb = split.ref_b[ref_event]
    auc = classifier_auc(
        flash_x[fa], ref_x[rb], groups0=flash_event[fa], groups1=ref_event[rb],
        n_folds=n_folds, seed=seed, max_rows=max_rows, n_threads=n_threads,
    )
    floor = classifier_auc(
        ref_x[ra], ref_x[rb], groups0=ref_event[ra], groups1=ref_event[rb],
        n_folds=n_folds, seed=seed, max_rows=max_rows, n_threads=n_threads,
    )
    return {
        "auc": auc,
        "auc_ref_halves": floor,
        "n_flash": int(fa.sum()),
        "n_reference": int(rb.sum()),
    }


# --------------------------------------------------------------------------------------------
# Correlations
# --------------------------------------------------------------------------------------------


def correlation_matrix(x: np.ndarray) -> np.ndarray:
    """Pearson correlation matrix of the columns of ``x``; constant columns get 0 off-diagonal."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        return np.full((x.shape[1], x.shape[1]), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x, rowvar=False)
    c = np.atleast_2d(c)
    c = np.where(np.isfinite(c), c, 0.0)
    np.fill_diagonal(c, 1.0)
    return c


def correlation_difference(x_flash: np.ndarray, x_ref: np.ndarray) -> tuple[np.ndarray, float]:
    """Difference of the correlation matrices (flash - reference) and its largest absolute entry."""
    d = correlation_matrix(x_flash) - correlation_matrix(x_ref)
    return d, float(np.max(np.abs(d))) if d.size else 0.0


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------


BOOTSTRAP_VALUES = 4_000_000  # values resampled at once by response_profile


def response_profile(x: np.ndarray, response: np.ndarray, bins: np.ndarray, *, min_count: int = 5,
                     n_boot: int = 200, seed: int = 0) -> dict:
    """Median response and resolution of ``response`` (e.g. reco pt / gen pt) in bins of ``x``.

    resolution = IQR / 1.349 (robust Gaussian sigma); ``std`` is also given. The errors of the
    median and the resolution are the spread of ``n_boot`` bootstrap resamples of each bin (honest
    for non-Gaussian tails). Bins with fewer than ``min_count`` entries are NaN.
    """
    x, response = np.asarray(x, np.float64), np.asarray(response, np.float64)
    bins = np.asarray(bins, np.float64)
    nb = len(bins) - 1
    out = {k: np.full(nb, np.nan) for k in ("median", "median_err", "resolution", "resolution_err", "std", "mean")}
    count = np.zeros(nb, int)
    idx = np.digitize(x, bins) - 1
    rng = np.random.default_rng(seed)
    for i in range(nb):
        r = response[idx == i]
        count[i] = len(r)
        if len(r) < min_count:
            continue
        q1, med, q3 = np.percentile(r, [25, 50, 75])
        out["median"][i] = med
        out["resolution"][i] = (q3 - q1) / 1.349
        out["std"][i] = r.std(ddof=1)
        out["mean"][i] = r.mean()
        chunk = max(1, BOOTSTRAP_VALUES // len(r))  # resamples per pass: bounds memory for large bins
        boot = np.concatenate([np.percentile(r[rng.integers(0, len(r), (min(chunk, n_boot - k), len(r)))], [25, 50, 75], axis=1)
                               for k in range(0, n_boot, chunk)], axis=1)
        out["median_err"][i] = boot[1].std(ddof=1)
        out["resolution_err"][i] = ((boot[2] - boot[0]) / 1.349).std(ddof=1)
    out["count"] = count
    out["edges"] = bins
    return out


def efficiency_profile(x: np.ndarray, passed: np.ndarray, bins: np.ndarray, *, cl: float = 0.6827) -> dict:
    """Fraction of objects that pass (e.g. gen objects with a reco match) in bins of ``x``, with
    Clopper-Pearson intervals at confidence ``cl``."""
    x = np.asarray(x, np.float64)
    passed = np.asarray(passed, bool)
    bins = np.asarray(bins, np.float64)
    total, _ = np.histogram(x, bins)
    npass, _ = np.histogram(x[passed], bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = np.where(total > 0, npass / np.maximum(total, 1), np.nan)
    alpha = 1 - cl
    lo = np.where(npass > 0, stats.beta.ppf(alpha / 2, npass, total - npass + 1), 0.0)
    hi = np.where(npass < total, stats.beta.ppf(1 - alpha / 2, npass + 1, total - npass), 1.0)
    lo = np.where(total > 0, lo, np.nan)
    hi = np.where(total > 0, hi, np.nan)
    return {"edges": bins, "efficiency": eff, "low": lo, "high": hi, "total": total, "passed": npass}


def profile_chi2_ndf(a: np.ndarray, a_err: np.ndarray, b: np.ndarray, b_err: np.ndarray) -> float:
    """chi2/ndf between two binned profiles with independent errors (NaN bins skipped)."""
    a, b, ea, eb = (np.asarray(v, np.float64) for v in (a, b, a_err, b_err))
    var = ea**2 + eb**2
    ok = np.isfinite(a) & np.isfinite(b) & np.isfinite(var) & (var > 0)
    if not ok.any():
        return float("nan")
    return float(np.sum((a[ok] - b[ok]) ** 2 / var[ok]) / ok.sum())


def weighted_yield(weights: np.ndarray) -> tuple[float, float]:
    """Sum of weights and its error sqrt(sum of squared weights)."""
    w = np.asarray(weights, np.float64)
    return float(w.sum()), float(np.sqrt(np.sum(w**2)))


def yield_pull(a: float, a_err: float, b: float, b_err: float) -> float:
    """(a - b) / sqrt(a_err² + b_err²) of two independent yields; NaN without any error (no events)."""
    var = a_err**2 + b_err**2
    return (a - b) / np.sqrt(var) if var > 0 else float("nan")


def paired_pull(a_weights: np.ndarray, b_weights: np.ndarray) -> float:
    """Pull of the yield difference of two samples of the same events, ``*_weights`` per event (0 where
    it fails): sum d / sqrt(sum d²), d = a - b per event, so events both samples agree on add no error."""
    d = np.asarray(a_weights, np.float64) - np.asarray(b_weights, np.float64)
    var = float(np.sum(d**2))
    return float(d.sum() / np.sqrt(var)) if var > 0 else float("nan")


def shape_chi2(a: np.ndarray, a_var: np.ndarray, b: np.ndarray, b_var: np.ndarray) -> tuple[float, int]:
    """χ² and ndf of two histograms' shapes (each normalised to unit sum, errors from both), over the
    bins with entries; ndf = bins - 1 (the normalisation). NaN and 0 when either histogram is empty."""
    a, b, a_var, b_var = (np.asarray(v, np.float64) for v in (a, b, a_var, b_var))
    ta, tb = a.sum(), b.sum()
    if ta <= 0 or tb <= 0:
        return float("nan"), 0
    var = a_var / ta**2 + b_var / tb**2
    ok = var > 0
    ndf = int(ok.sum()) - 1
    if ndf < 1:
        return float("nan"), 0
    return float(np.sum((a[ok] / ta - b[ok] / tb) ** 2 / var[ok])), ndf


def _efficiency_err(p: dict) -> np.ndarray:
    return 0.5 * (p["high"] - p["low"])


# --------------------------------------------------------------------------------------------
# Gen matching
# --------------------------------------------------------------------------------------------


def _flat_match(reco_idx: ak.Array, n_gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat reco->gen global indices (into the flattened gen collection) and the valid mask."""
    counts = ak.to_numpy(ak.num(reco_idx, axis=1))
    idx = np.asarray(ak.to_numpy(ak.flatten(reco_idx, axis=1)), dtype=np.int64)
    evt = np.repeat(np.arange(len(counts)), counts)
    n_gen = np.asarray(n_gen, np.int64)
    gen_offsets = np.concatenate([[0], np.cumsum(n_gen)])
    valid = (idx >= 0) & (idx < n_gen[evt])
    glob = np.where(valid, gen_offsets[evt] + np.where(valid, idx, 0), -1)
    return glob, valid


def matched_mask(reco_idx: ak.Array, gen: ak.Array) -> ak.Array:
    """Jagged boolean mask over ``gen`` objects: True where some reco object points to it
    (``reco_idx`` e.g. ``events.Jet.genJetIdx``; out-of-range and negative indices ignored)."""
    n_gen = ak.to_numpy(ak.num(gen, axis=1))
    glob, valid = _flat_match(reco_idx, n_gen)
    flat = np.zeros(int(n_gen.sum()), bool)
    flat[glob[valid]] = True
    return ak.unflatten(flat, n_gen)


def gather_matched(reco_idx: ak.Array, gen: ak.Array) -> ak.Array:
    """Gen records aligned to reco objects (same jagged structure as ``reco_idx``), None where
    the reco object has no valid gen match."""
    n_gen = ak.to_numpy(ak.num(gen, axis=1))
    glob, valid = _flat_match(reco_idx, n_gen)
    flat_gen = ak.flatten(gen, axis=1)
    taken = flat_gen[np.where(valid, glob, 0)] if len(flat_gen) else flat_gen[np.zeros(0, np.int64)]
    if len(flat_gen) == 0 and len(glob):
        raise InputError("reco objects point to a gen collection with no objects")
    masked = ak.mask(taken, valid)
    return ak.unflatten(masked, ak.num(reco_idx, axis=1))


# --------------------------------------------------------------------------------------------
# Tagger ROC
# --------------------------------------------------------------------------------------------

#: signal / background hadron flavours for tagger ROCs (hadronFlavour: 5 b, 4 c, 0 light)
FLAVOUR_PAIRS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "b_vs_light": ((5,), (0,)),
    "c_vs_light": ((4,), (0,)),
    "b_vs_c": ((5,), (4,)),
}


def roc_by_flavour(
    score: np.ndarray, flavour: np.ndarray, signal: Iterable[int], background: Iterable[int], *, n_points: int = 200
) -> dict:
    """ROC curve (signal efficiency vs background efficiency) and AUC of a tagger score for
    objects of ``signal`` flavours against ``background`` flavours. Curves are thinned to
    ``n_points`` for storage."""
    from sklearn.metrics import roc_auc_score, roc_curve

    score = np.asarray(score, np.float64)
    flavour = np.asarray(flavour)
    sig = np.isin(flavour, list(signal))
    bkg = np.isin(flavour, list(background))
    sel = sig | bkg
    if sig.sum() == 0 or bkg.sum() == 0:
        return {"auc": float("nan"), "fpr": np.zeros(0), "tpr": np.zeros(0), "n_signal": int(sig.sum()), "n_background": int(bkg.sum())}
    y = sig[sel].astype(int)
    fpr, tpr, _ = roc_curve(y, score[sel])
    if len(fpr) > n_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, n_points).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {
        "auc": float(roc_auc_score(y, score[sel])),
        "fpr": fpr,
        "tpr": tpr,
        "n_signal": int(sig.sum()),
        "n_background": int(bkg.sum()),
    }


# --------------------------------------------------------------------------------------------
# Bands and binning
# --------------------------------------------------------------------------------------------


def bootstrap_band(
    values: EventValues | np.ndarray,
    bins: np.ndarray,
    *,
    n_boot: int = 100,
    seed: int = 0,
    density: bool = True,
    quantiles: tuple[float, float] = (0.16, 0.84),
) -> tuple[np.ndarray, np.ndarray]:
    """Bin-by-bin bootstrap band (lower, upper quantiles) of a histogram of the reference,
    resampling whole events with Poisson(1) weights."""
    ev = as_event_values(values)
    rng = np.random.default_rng(seed)
    idx = np.digitize(ev.values, bins) - 1
    nb = len(bins) - 1
    inside = (idx >= 0) & (idx < nb)
    idx, evt = idx[inside], ev.event[inside]
    width = np.diff(bins)
    h = np.empty((n_boot, nb))
    for b in range(n_boot):
        w = rng.poisson(1.0, ev.n_events).astype(np.float64)[evt]
        h[b] = np.bincount(idx, weights=w, minlength=nb)
        if density:
            tot = h[b].sum()
            h[b] = h[b] / (tot * width) if tot > 0 else h[b]
    return np.quantile(h, quantiles[0], axis=0), np.quantile(h, quantiles[1], axis=0)


def ensemble_band(samples: Sequence[np.ndarray], bins: np.ndarray, *, density: bool = True) -> dict:
    """Bin-by-bin spread of histograms of K flash samples (K trainings): mean, std, min, max.
    The spread is the training systematic."""
    hs = np.array([np.histogram(np.asarray(s, np.float64), bins, density=density)[0] for s in samples])
    return {"mean": hs.mean(0), "std": hs.std(0, ddof=1) if len(hs) > 1 else np.zeros(hs.shape[1]),
            "min": hs.min(0), "max": hs.max(0)}


def auto_bins(*samples: np.ndarray, n_bins: int = 40, quantile_range: tuple[float, float] = (0.002, 0.998)) -> np.ndarray:
    """Shared bin edges: unit bins centred on integers for discrete variables with few values,
    else ``n_bins`` equal bins over the central quantile range of the pooled samples."""
    pooled = np.concatenate([np.asarray(s, np.float64).ravel() for s in samples if len(s)]) if any(len(s) for s in samples) else np.zeros(1)
    pooled = pooled[np.isfinite(pooled)]
    if len(pooled) == 0:
        return np.linspace(0, 1, n_bins + 1)
    uniq = np.unique(pooled[: 200000])
    if np.all(np.mod(uniq, 1) == 0) and len(uniq) <= 60:
        lo, hi = pooled.min(), pooled.max()
        return np.arange(lo - 0.5, hi + 1.5, 1.0)
    lo, hi = np.quantile(pooled, quantile_range)
    if not hi > lo:
        lo, hi = pooled.min() - 0.5, pooled.max() + 0.5
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, n_bins + 1)
