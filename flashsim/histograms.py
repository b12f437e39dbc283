"""Histograms of oversampled flash output: weights 1/N, and errors that count each GEN event once.

With ``oversample`` N each GEN event is simulated N times (``FlashSim.oversampleIndex``), each copy weighing 1/N
(``FlashSim.weight``). The copies share their GEN event, so they are not independent draws: the variance of a bin is
the sum, over GEN events, of the square of the weight the event puts in the bin (its N copies and all their entries
together). With N = 1 and at most one entry per event and bin, that is hist's own Weight storage (the sum of squared
weights); entries of one event in one bin (two jets) are summed before squaring in every case, as they are correlated.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from flashsim.chain import EVENT_ID_COLUMNS
from flashsim.errors import ConfigError, InputError

__all__ = ["fill", "fill_variation", "reweight"]


def fill(histogram: Any, events: ak.Array, weight: Any = None, **values: Any) -> Any:
    """Fill a ``hist.Hist`` of Weight storage from flash events (flashsim records or coffea NanoEvents); returns it.

    ``values`` by axis name: one value per event, a list per event (``pt=events.Jet.pt``: every jet) or a scalar.
    Each entry weighs its event's ``FlashSim.weight`` (1 without oversampling) times ``weight`` (per event or per entry).
    A bin's variance sums, over GEN events (run, luminosityBlock, event), the square of that event's weight in the bin:
    fill from chunks holding every copy of their GEN events (always true on the fly; in a file the N copies are adjacent).
    """
    import boost_histogram as bh

    if histogram.storage_type is not bh.storage.Weight:
        raise ConfigError(f"fill needs a histogram with Weight storage (hist.Hist.new....Weight()), got {histogram.storage_type.__name__}")
    missing = [c for c in EVENT_ID_COLUMNS if c not in events.fields]
    if missing:
        raise InputError(f"fill groups the copies of a GEN event by {list(EVENT_ID_COLUMNS)}; the events lack {missing}")
    names = [axis.name for axis in histogram.axes]
    if sorted(values) != sorted(names):
        raise ConfigError(f"fill: values given for {sorted(values)}, the histogram's axes are {names}")
    event_weight = events.FlashSim.weight if "FlashSim" in events.fields else np.ones(len(events))
    arrays = {n: v for n, v in values.items() if not np.isscalar(v)}
    if weight is not None:
        arrays["weight"] = weight
    flat = _flat_entries([_gen_event_index(events), event_weight, *arrays.values()])
    gen, entry_weight = flat[0], flat[1] * (flat[-1] if weight is not None else 1.0)
    columns = dict(zip(arrays, flat[2:]))
    coordinates = {n: columns.get(n, values[n]) for n in names}
    if any(axis.traits.growth for axis in histogram.axes):
        histogram.fill(**coordinates, weight=0.0)  # grows the axes first, so that every value has its bin below
    keys = [gen] + [_bin_key(axis, columns[axis.name]) for axis in histogram.axes if axis.name in columns]
    _, first, group = np.unique(np.stack(keys), axis=1, return_index=True, return_inverse=True)
    summed = np.bincount(group.ravel(), weights=entry_weight)
    histogram.fill(**{n: (c[first] if n in columns else c) for n, c in coordinates.items()}, weight=summed)
    return histogram


def fill_variation(histogram: Any, events: ak.Array, factor: Any, weight: Any = None, **values: Any) -> tuple[Any, Any, np.ndarray]:
    """Fill empty copies of ``histogram`` at the nominal weight and at the weight times ``factor`` (per event or entry,
    e.g. ``events.LHEScaleWeight[:, 0]``); returns (nominal, variation, their per-bin covariance over GEN events)."""
    nominal_weight = 1.0 if weight is None else weight
    nominal = fill(histogram.copy().reset(), events, weight=weight, **values)
    variation = fill(histogram.copy().reset(), events, weight=nominal_weight * factor, **values)
    both = fill(histogram.copy().reset(), events, weight=nominal_weight * (1 + factor), **values)
    # Var(a + b) = Var(a) + Var(b) + 2 Cov(a, b), each summed over GEN events as fill does
    covariance = (both.variances(flow=True) - nominal.variances(flow=True) - variation.variances(flow=True)) / 2
    return nominal, variation, covariance


def reweight(reference: Any, nominal: Any, variation: Any, covariance: np.ndarray | None = None) -> Any:
    """``reference`` × ``variation`` / ``nominal`` per bin (flow bins included), a new Weight histogram; bins where the
    nominal flash histogram is empty are 0. Variance by first-order propagation, the reference independent of the flash
    histograms, which are independent samples unless ``covariance`` (from ``fill_variation``) is given."""
    import boost_histogram as bh

    for name, h in (("reference", reference), ("nominal", nominal), ("variation", variation)):
        if h.storage_type is not bh.storage.Weight:
            raise ConfigError(f"reweight needs Weight-storage histograms; {name} has {h.storage_type.__name__}")
        if h.axes != reference.axes:
            raise ConfigError(f"reweight: the {name} histogram's axes differ from the reference's ({h.axes} vs {reference.axes})")
    ref, nom, var = (h.values(flow=True) for h in (reference, nominal, variation))
    cov = np.zeros_like(nom) if covariance is None else np.asarray(covariance)
    filled = nom != 0
    ratio = np.divide(var, nom, out=np.zeros_like(nom), where=filled)
    # Var(var/nom) ≈ (Var(var) − 2 r Cov + r² Var(nom)) / nom²
    ratio_variance = np.divide(variation.variances(flow=True) - 2 * ratio * cov + ratio**2 * nominal.variances(flow=True),
                               nom**2, out=np.zeros_like(nom), where=filled)
    result = reference.copy().reset()
    view = result.view(flow=True)
    view.value = ref * ratio
    view.variance = reference.variances(flow=True) * ratio**2 + ref**2 * np.maximum(ratio_variance, 0.0)
    return result


def _gen_event_index(events: ak.Array) -> np.ndarray:
    """Per event, the index of its GEN event (its (run, luminosityBlock, event)) among the distinct ones."""
    ids = np.stack([ak.to_numpy(events[c]).astype(np.uint64) for c in EVENT_ID_COLUMNS], axis=1)
    return np.unique(ids, axis=0, return_inverse=True)[1].ravel()


def _flat_entries(arrays: list[Any]) -> list[np.ndarray]:
    """Arrays of one value per event or one list per event, broadcast against each other and flattened to entries."""
    broadcast = ak.broadcast_arrays(*(ak.Array(a) if not isinstance(a, ak.Array) else a for a in arrays))
    return [ak.to_numpy(ak.flatten(b, axis=None)) for b in broadcast]


def _bin_key(axis: Any, column: np.ndarray) -> np.ndarray:
    """An integer per entry that is the same for entries falling in the same bin of ``axis``."""
    import boost_histogram as bh

    if isinstance(axis, (bh.axis.StrCategory, bh.axis.IntCategory)):  # index() refuses a value it lacks: -1, the overflow
        known = np.isin(column, np.asarray(list(axis)))
        return np.where(known, np.unique(column, return_inverse=True)[1].ravel(), -1)
    return np.asarray(axis.index(column))
