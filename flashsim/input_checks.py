"""GEN input checked before any unit runs: every float a chain reads from its input collections must be
finite, kinematics must lie in their physical range at the LHC, and each branch within the ranges its units
declare. A bad value is an error naming the branch, the event, the value and the range; or, when asked, its
event is skipped and counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np

from flashsim.errors import InputError

__all__ = ["PHYSICAL_RANGES", "BadInput", "DeclaredRange", "bad_events", "declared_ranges"]

SQRT_S_HALF = 6800.0  # GeV: half the LHC Run-3 collision energy bounds any pt, energy or mass
#: field name -> (low, high), inclusive, for every collection (units: GeV)
PHYSICAL_RANGES: dict[str, tuple[float, float]] = {
    "pt": (0.0, SQRT_S_HALF),
    "mass": (-0.01, SQRT_S_HALF),  # float rounding of massless particles
    "sumEt": (0.0, 2 * SQRT_S_HALF),
    "nTrueInt": (0.0, 1000.0),
}
_EVENT_ID_COLUMNS = ("run", "luminosityBlock", "event")


class BadInput(InputError):
    """A GEN value that is not finite or lies outside its physical range."""


@dataclass(frozen=True)
class DeclaredRange:
    """The range of a GEN branch that the units reading it accept: the intersection of their declarations."""

    low: float
    high: float
    units: tuple[str, ...]

    def narrowed(self, low: float, high: float, unit: str) -> DeclaredRange:
        return DeclaredRange(max(self.low, low), min(self.high, high), (*self.units, unit))


def declared_ranges(declarations: Iterable[tuple[str, Mapping[str, tuple[float, float]]]]) -> dict[str, DeclaredRange]:
    """Branch (``GenJet_pt``) -> the range every declaring unit accepts, from (unit, ``{"GenJet.pt": (low, high)}``) pairs."""
    out: dict[str, DeclaredRange] = {}
    for unit, ranges in declarations:
        for key, (low, high) in ranges.items():
            branch = key.replace(".", "_", 1)
            out[branch] = out.get(branch, DeclaredRange(-np.inf, np.inf, ())).narrowed(low, high, unit)
    return out


def _allowed(field: str, declared: DeclaredRange | None) -> tuple[float, float, str]:
    """A field's accepted range: its physical one, narrowed by what units declare, and who declared it."""
    low, high = PHYSICAL_RANGES.get(field, (-np.inf, np.inf))
    if declared is None:
        return low, high, ""
    units = ", ".join(repr(u) for u in declared.units)
    return max(low, declared.low), min(high, declared.high), f" (declared by unit {units})"


def _event_name(events: ak.Array, i: int) -> str:
    ids = [f"{c} {int(events[c][i])}" for c in _EVENT_ID_COLUMNS if c in events.fields]
    return f"event {i} of the chunk" + (f" ({', '.join(ids)})" if ids else "")


def bad_events(events: ak.Array, collections: Iterable[str], skip: bool,
               declared: Mapping[str, DeclaredRange] | None = None) -> tuple[np.ndarray, Counter[str]]:
    """Mask of the events whose read collections are all finite, physical and within the ``declared`` ranges, and
    the branches that failed (events counted once per branch). Without ``skip`` the first bad value raises :class:`BadInput`."""
    good = np.ones(len(events), bool)
    failed: Counter[str] = Counter()
    for collection in sorted(set(collections) & set(events.fields)):
        record = events[collection]
        for field in record.fields if record.fields else []:
            values = record[field]
            flat = ak.to_numpy(ak.flatten(values, axis=None))
            branch = f"{collection}_{field}"
            if flat.dtype.kind not in "fiu" or (flat.dtype.kind != "f" and branch not in (declared or {})):
                continue
            low, high, declarer = _allowed(field, (declared or {}).get(branch))
            wrong = ~np.isfinite(flat) | (flat < low) | (flat > high)
            if not wrong.any():
                continue
            per_event = np.asarray(ak.any(ak.unflatten(wrong, ak.num(values, axis=1)), axis=1)) if values.ndim > 1 else wrong
            if not skip:
                i = int(np.flatnonzero(per_event)[0])
                value = flat[np.flatnonzero(wrong)[0]]
                allowed = "finite" if (low, high) == (-np.inf, np.inf) else f"finite and within [{low:g}, {high:g}]{declarer}"
                raise BadInput(f"branch {branch}: {float(value):g} in {_event_name(events, i)} ({int(per_event.sum())} events "
                               f"with such values in this chunk); it must be {allowed}. --on-bad-input skip drops such events")
            failed[branch] += int((per_event & good).sum())
            good &= ~per_event
    return good, failed
