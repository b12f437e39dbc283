"""GEN input checked before any unit runs: every float a chain reads from its input collections must be
finite, and kinematics must lie in their physical range at the LHC. A bad value is an error naming the
branch, the event and the value; or, when asked, its event is skipped and counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import awkward as ak
import numpy as np

from flashsim.errors import InputError

__all__ = ["PHYSICAL_RANGES", "BadInput", "bad_events"]

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


def _event_name(events: ak.Array, i: int) -> str:
    ids = [f"{c} {int(events[c][i])}" for c in _EVENT_ID_COLUMNS if c in events.fields]
    return f"event {i} of the chunk" + (f" ({', '.join(ids)})" if ids else "")


def bad_events(events: ak.Array, collections: Iterable[str], skip: bool) -> tuple[np.ndarray, Counter[str]]:
    """Mask of the events whose read collections are all finite and physical, and the branches that failed
    (events counted once per branch). Without ``skip`` the first bad value raises :class:`BadInput`."""
    good = np.ones(len(events), bool)
    failed: Counter[str] = Counter()
    for collection in sorted(set(collections) & set(events.fields)):
        record = events[collection]
        for field in record.fields if record.fields else []:
            values = record[field]
            flat = ak.to_numpy(ak.flatten(values, axis=None))
            if flat.dtype.kind != "f":
                continue
            low, high = PHYSICAL_RANGES.get(field, (-np.inf, np.inf))
            wrong = ~np.isfinite(flat) | (flat < low) | (flat > high)
            if not wrong.any():
                continue
            per_event = np.asarray(ak.any(ak.unflatten(wrong, ak.num(values, axis=1)), axis=1)) if values.ndim > 1 else wrong
            branch = f"{collection}_{field}"
            if not skip:
                i = int(np.flatnonzero(per_event)[0])
                value = flat[np.flatnonzero(wrong)[0]]
                allowed = "finite" if (low, high) == (-np.inf, np.inf) else f"finite and within [{low:g}, {high:g}]"
                raise BadInput(f"branch {branch}: {float(value):g} in {_event_name(events, i)} ({int(per_event.sum())} events "
                               f"with such values in this chunk); it must be {allowed}. --on-bad-input skip drops such events")
            failed[branch] += int((per_event & good).sum())
            good &= ~per_event
    return good, failed
