"""Validation plots (hist + mplhep, CMS style, Agg backend): 1-D histograms with a ratio panel,
corner plots, response/resolution/efficiency profiles and tagger ROC curves.

Every function returns the matplotlib Figure and, given ``path``, writes a PNG and closes it.
Flash is drawn as a solid line, the reference as black markers with its bootstrap band.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # never open a window; the report only writes files

import logging  # noqa: E402

import hist  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import mplhep  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "FLASH_COLOR",
    "REF_COLOR",
    "plot_hist_ratio",
    "plot_overlay",
    "plot_corner",
    "plot_profile",
    "plot_roc",
    "hdr_levels",
]

FLASH_COLOR = "#e42536"
REF_COLOR = "black"
BAND_COLOR = "#94a4a2"
ENSEMBLE_COLOR = "#f89c20"
_CYCLE = ["#5790fc", "#f89c20", "#e42536", "#964a8b", "#9c9ca1", "#7a21dd"]
_DPI = 80
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # CMS style asks for fonts we may lack


def _style():
    return plt.style.context(mplhep.style.CMS)


def _label(ax, text: str = "Simulation Preliminary") -> None:
    """The experiment label, CMS-like but naming flashsim: bold "flashsim", italic "Simulation Preliminary".
    Drawn as one mathtext string so that it never overlaps, whatever fonts the machine has."""
    words = r"\ ".join(text.split())
    ax.text(0.0, 1.015, rf"$\bf{{flashsim}}$ $\it{{{words}}}$", transform=ax.transAxes, ha="left", va="bottom",
            fontsize=16)


def _finish(fig, path: str | Path | None):
    if path is not None:
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
        plt.close(fig)
    return fig


def _hist(values: np.ndarray, bins: np.ndarray, weights: np.ndarray | None = None) -> hist.Hist:
    h = hist.Hist(hist.axis.Variable(np.asarray(bins, np.float64), flow=False), storage=hist.storage.Weight())
    h.fill(np.asarray(values, np.float64), weight=None if weights is None else np.asarray(weights, np.float64))
    return h


def _density(h: hist.Hist) -> tuple[np.ndarray, np.ndarray]:
    """Density-normalised values and their Poisson errors."""
    v, var = h.values(), h.variances()
    if var is None:  # a storage without variances: Poisson
        var = v
    w = np.diff(h.axes[0].edges)
    tot = v.sum()
    if tot <= 0:
        return np.zeros_like(v), np.zeros_like(v)
    return v / (tot * w), np.sqrt(var) / (tot * w)


def plot_hist_ratio(
    flash: np.ndarray,
    reference: np.ndarray,
    bins: np.ndarray,
    *,
    xlabel: str,
    path: str | Path | None = None,
    ref_band: tuple[np.ndarray, np.ndarray] | None = None,
    ensemble: Mapping[str, np.ndarray] | None = None,
    annotation: str | None = None,
    logy: bool = False,
    flash_label: str = "flashsim",
    ref_label: str = "reference",
    flash_weights: np.ndarray | None = None,
    ref_weights: np.ndarray | None = None,
):
    """Density-normalised 1-D histograms of flash and reference with a flash/reference ratio panel.

    ref_band: (low, high) bootstrap band of the reference density (e.g. from ``bootstrap_band``).
    ensemble: ``ensemble_band`` output for K flash trainings, drawn as the flash systematic band.
    flash_weights, ref_weights: event weights (errors from the sums of squared weights).
    """
    bins = np.asarray(bins, np.float64)
    hf, hr = _hist(flash, bins, flash_weights), _hist(reference, bins, ref_weights)
    df, ef = _density(hf)
    dr, er = _density(hr)
    centers = 0.5 * (bins[1:] + bins[:-1])
    with _style():
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 7.5), gridspec_kw={"height_ratios": (3, 1)}, sharex=True)
        fig.subplots_adjust(hspace=0.07)
        if ref_band is not None:
            ax.stairs(ref_band[1], bins, baseline=ref_band[0], fill=True, color=BAND_COLOR, alpha=0.5,
                      label="reference bootstrap 68%")
        if ensemble is not None:
            ax.stairs(ensemble["max"], bins, baseline=ensemble["min"], fill=True, color=ENSEMBLE_COLOR, alpha=0.4,
                      label="flashsim ensemble spread")
        mplhep.histplot(df, bins, yerr=ef, ax=ax, color=FLASH_COLOR, label=flash_label, histtype="step", lw=2)
        mplhep.histplot(dr, bins, yerr=er, ax=ax, color=REF_COLOR, label=ref_label, histtype="errorbar",
                        marker="o", markersize=4)
        ax.set_ylabel("density")
        if logy:
            ax.set_yscale("log")
        ax.legend(fontsize=13, loc="upper right")
        if annotation:
            ax.text(0.03, 0.95, annotation, transform=ax.transAxes, va="top", fontsize=12, family="monospace")
        _label(ax)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(dr > 0, df / dr, np.nan)
            rerr = np.where(dr > 0, ef / dr, np.nan)
            if ref_band is not None:
                rax.stairs(np.where(dr > 0, ref_band[1] / dr, np.nan), bins,
                           baseline=np.where(dr > 0, ref_band[0] / dr, np.nan), fill=True, color=BAND_COLOR, alpha=0.5)
            if ensemble is not None:
                rax.stairs(np.where(dr > 0, ensemble["max"] / dr, np.nan), bins,
                           baseline=np.where(dr > 0, ensemble["min"] / dr, np.nan), fill=True, color=ENSEMBLE_COLOR,
                           alpha=0.4)
        rax.errorbar(centers, ratio, yerr=rerr, fmt="o", color=FLASH_COLOR, markersize=3)
        rax.axhline(1.0, color="k", lw=1, ls="--")
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel("flash / ref")
        rax.set_xlabel(xlabel)
        rax.set_xlim(bins[0], bins[-1])
    return _finish(fig, path)


def plot_overlay(
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]],
    bins: np.ndarray,
    *,
    xlabel: str,
    path: str | Path | None = None,
    logy: bool = False,
):
    """Distributions split by a category (gen flavour, status flag): per category, flash as a
    line and the reference as markers of the same colour, each normalised to unit area."""
    bins = np.asarray(bins, np.float64)
    with _style():
        fig, ax = plt.subplots(figsize=(8, 6.5))
        for i, (name, (f, r)) in enumerate(groups.items()):
            c = _CYCLE[i % len(_CYCLE)]
            df, ef = _density(_hist(f, bins))
            dr, er = _density(_hist(r, bins))
            mplhep.histplot(df, bins, ax=ax, color=c, histtype="step", lw=2, label=f"{name} flashsim")
            mplhep.histplot(dr, bins, yerr=er, ax=ax, color=c, histtype="errorbar", marker="o", markersize=4,
                            label=f"{name} reference")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
        if logy:
            ax.set_yscale("log")
        ax.set_xlim(bins[0], bins[-1])
        ax.legend(fontsize=11, ncol=2)
        _label(ax)
    return _finish(fig, path)


def hdr_levels(h: np.ndarray, levels: Sequence[float]) -> list[float]:
    """Density thresholds enclosing the given probability masses (highest-density regions)."""
    flat = np.sort(h.ravel())[::-1]
    cum = np.cumsum(flat)
    if cum[-1] <= 0:
        return [0.0 for _ in levels]
    cum /= cum[-1]
    return [float(flat[min(int(np.searchsorted(cum, lv)), len(flat) - 1)]) for lv in levels]


def _corner_ranges(flash: np.ndarray, reference: np.ndarray, k: int) -> list[tuple[float, float]]:
    """Per variable, the pooled 0.1-99.9% quantile range widened by 5% on each side."""
    pooled = np.concatenate([flash, reference])
    ranges = []
    for j in range(k):
        lo, hi = np.quantile(pooled[:, j], [0.001, 0.999]) if len(pooled) else (0.0, 1.0)
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        ranges.append((float(lo), float(hi)))
    return ranges


def _corner_diagonal(ax, flash: np.ndarray, reference: np.ndarray, j: int, rng: tuple[float, float], n_bins: int) -> None:
    """1-D densities of variable ``j``: flash solid, reference dashed."""
    b = np.linspace(*rng, n_bins + 1)
    ax.hist(reference[:, j], b, density=True, histtype="step", color=REF_COLOR, ls="--", lw=1.5)
    ax.hist(flash[:, j], b, density=True, histtype="step", color=FLASH_COLOR, lw=1.5)
    ax.set_yticks([])


def _corner_contours(ax, flash: np.ndarray, reference: np.ndarray, i: int, j: int,
                     ranges: Sequence[tuple[float, float]], n_bins: int, levels: Sequence[float]) -> None:
    """Smoothed highest-density contours of variable ``i`` vs ``j``: flash solid, reference dashed."""
    from scipy.ndimage import gaussian_filter

    bx = np.linspace(*ranges[j], n_bins + 1)
    by = np.linspace(*ranges[i], n_bins + 1)
    for data, color, ls in ((reference, REF_COLOR, "--"), (flash, FLASH_COLOR, "-")):
        h, _, _ = np.histogram2d(data[:, j], data[:, i], bins=(bx, by))
        h = gaussian_filter(h, 1.0)
        lv = sorted(set(hdr_levels(h, levels)))
        lv = [v for v in lv if v > 0]
        if len(lv) >= 1:
            cx = 0.5 * (bx[1:] + bx[:-1])
            cy = 0.5 * (by[1:] + by[:-1])
            ax.contour(cx, cy, h.T, levels=lv, colors=color, linestyles=ls, linewidths=1.2)
    ax.set_xlim(*ranges[j])
    ax.set_ylim(*ranges[i])


def _corner_labels(ax, i: int, j: int, names: Sequence[str]) -> None:
    """Axis labels on the bottom row and the left column only."""
    if i == len(names) - 1:
        ax.set_xlabel(names[j], fontsize=13)
    else:
        ax.set_xticklabels([])
    if j == 0 and i > 0:
        ax.set_ylabel(names[i], fontsize=13)
    elif j > 0 or i == 0:
        ax.set_yticklabels([])
    ax.tick_params(labelsize=9)


def plot_corner(
    flash: np.ndarray,
    reference: np.ndarray,
    names: Sequence[str],
    *,
    path: str | Path | None = None,
    levels: Sequence[float] = (0.5, 0.9, 0.99),
    n_bins: int = 40,
    ranges: Sequence[tuple[float, float]] | None = None,
):
    """Corner plot: 1-D densities on the diagonal, pairwise highest-density contours enclosing
    ``levels`` of the mass (flash solid, reference dashed) below it."""
    flash, reference = np.asarray(flash, np.float64), np.asarray(reference, np.float64)
    k = len(names)
    if ranges is None:
        ranges = _corner_ranges(flash, reference, k)
    with _style():
        fig, axes = plt.subplots(k, k, figsize=(2.6 * k + 1, 2.6 * k + 1), squeeze=False)
        fig.subplots_adjust(hspace=0.08, wspace=0.08)
        for i in range(k):
            for j in range(k):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    _corner_diagonal(ax, flash, reference, j, ranges[j], n_bins)
                else:
                    _corner_contours(ax, flash, reference, i, j, ranges, n_bins, levels)
                _corner_labels(ax, i, j, names)
        handles = [plt.Line2D([], [], color=FLASH_COLOR, lw=2), plt.Line2D([], [], color=REF_COLOR, ls="--", lw=2)]
        fig.legend(handles, ["flashsim", "reference"], loc="upper right", fontsize=14,
                   title="contours " + "/".join(f"{lv:g}" for lv in levels), title_fontsize=12)
        fig.suptitle(r"$\bf{flashsim}$ $\it{Simulation\ Preliminary}$", x=0.02, ha="left", fontsize=18)
    return _finish(fig, path)


def plot_profile(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    y: str,
    yerr: str | tuple[str, str] | None,
    xlabel: str,
    ylabel: str,
    path: str | Path | None = None,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
    ratio: bool = True,
):
    """Binned profiles (response, resolution, efficiency) of several samples, with a ratio panel
    to the last curve (the reference). ``curves`` maps a label to a profile dict with ``edges``.

    yerr: a key of symmetric errors, or (low, high) keys of an interval around ``y``."""
    labels = list(curves)
    with _style():
        if ratio and len(labels) > 1:
            fig, (ax, rax) = plt.subplots(2, 1, figsize=(8, 7.5), gridspec_kw={"height_ratios": (3, 1)}, sharex=True)
            fig.subplots_adjust(hspace=0.07)
        else:
            fig, ax = plt.subplots(figsize=(8, 6.5))
            rax = None
        ref_label = labels[-1]
        ref = curves[ref_label]
        for n, lab in enumerate(labels):
            p = curves[lab]
            e = np.asarray(p["edges"], np.float64)
            c = 0.5 * (e[1:] + e[:-1])
            xe = 0.5 * np.diff(e)
            yy = np.asarray(p[y], np.float64)
            if yerr is None:
                err = None
            elif isinstance(yerr, str):
                err = np.asarray(p[yerr], np.float64)
            else:
                err = np.vstack([yy - np.asarray(p[yerr[0]]), np.asarray(p[yerr[1]]) - yy])
            is_ref = lab == ref_label
            color = REF_COLOR if is_ref else (FLASH_COLOR if n == 0 else _CYCLE[n % len(_CYCLE)])
            ax.errorbar(c, yy, xerr=xe, yerr=err, fmt="o" if is_ref else "s", color=color, markersize=4,
                        label=lab, mfc="none" if not is_ref else color)
            if rax is not None and not is_ref:
                ry = np.asarray(ref[y], np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rr = np.where(ry != 0, yy / ry, np.nan)
                rax.errorbar(c, rr, xerr=xe, fmt="s", color=color, markersize=3)
        ax.set_ylabel(ylabel, fontsize=16 if len(ylabel) > 18 else None)  # long labels must not run into the ratio panel
        if ylim:
            ax.set_ylim(*ylim)
        if logx:
            ax.set_xscale("log")
            for a in (ax, rax):
                if a is not None:
                    a.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                    a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                    a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=13)
        _label(ax)
        last = rax if rax is not None else ax
        if rax is not None:
            rax.axhline(1.0, color="k", ls="--", lw=1)
            rax.set_ylabel("flash / ref", loc="center", fontsize=16)
            rax.set_ylim(0.8, 1.2)
        last.set_xlabel(xlabel)
    return _finish(fig, path)


def plot_roc(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str = "",
    path: str | Path | None = None,
):
    """Tagger ROC curves, CMS convention: signal efficiency (x) vs background efficiency (log y).
    ``curves`` maps a label to ``roc_by_flavour`` output; the AUC goes into the legend."""
    with _style():
        fig, ax = plt.subplots(figsize=(8, 6.5))
        for n, (lab, r) in enumerate(curves.items()):
            fpr, tpr = np.asarray(r["fpr"]), np.asarray(r["tpr"])
            ls = "--" if "reference" in lab else "-"
            color = _CYCLE[(n // 2) % len(_CYCLE)]
            ok = fpr > 0
            ax.plot(tpr[ok], fpr[ok], ls=ls, color=color, lw=2, label=f"{lab} (AUC {r['auc']:.3f})")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_ylim(1e-4, 1.1)
        ax.set_xlabel("signal efficiency")
        ax.set_ylabel("background efficiency")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=11, loc="lower right", title=title or None, title_fontsize=12)
        _label(ax)
    return _finish(fig, path)
