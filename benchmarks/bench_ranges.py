"""Sampled values in range (issue 21): for each zoo unit, at least ``--objects`` (default 10^7) drawn objects,
and how many values came out non-finite or outside the unit's declared target ranges (``[ranges]`` of its unit.toml).

    python benchmarks/bench_ranges.py --objects 10000000

GEN comes from held-out refsim files (Run-2 units: v9; Run-3 units: v15; the W+jet units: a W+jets file), tiled
with a fresh ``luminosityBlock`` per copy so that every copy draws new random numbers (they are keyed by the event).
Units that read reco collections of earlier units (fakejet: the matched jets; met: Jet and Muon) get the file's own
refsim ones. Each chunk goes through ``Unit.run``, the generation path, which refuses a chunk with any such value
(counted as a failed chunk, its message printed); the written values are then counted again here, independently.
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np
import torch

from flashsim.io import read_events
from flashsim.models import SamplingError
from flashsim.unit import Unit, load_unit

RUN2 = "data/refsim/test_ttbar_v9_303.root"
RUN3 = "data/refsim/test_ttbar_v15.root"
WJETS = "data/refsim/train_wjets_v15.root"
MAX_REFUSED = 10  # chunks refused before a unit's measurement stops
INPUTS = {"muon": RUN2, "jet": RUN2, "fakejet": RUN2, "met": RUN2, "met_genonly": RUN2,
          "jet_run3": RUN3, "fakejet_run3": RUN3, "wjet_flow": WJETS, "wjet_regressor": WJETS,
          "electron_fromjet": "data/refsim2/test_ttbar.root", "photon_fromjet": "data/refsim2/test_ttbar.root"}


def _input(unit: Unit, path: str) -> ak.Array:
    """The file's events (those passing an event unit's GEN selection, which draws no random number); for a merging
    (fake-jet) unit its collection cut to the gen-matched objects, with its fields; for a unit sourced through
    other collections (``match``), without its output collection."""
    events = read_events(path)
    selected = unit.event_mask(events)
    if selected is not None:
        events = events[selected]
    spec = unit.spec
    if spec.match is not None:  # units sourced through other collections (electrons from jets) create their output
        return events[[f for f in events.fields if f != spec.output]]
    if spec.merge:
        fields = list(dict.fromkeys(spec.target_columns + list(spec.constants) + list(spec.carry)))
        objects = events[spec.output]
        events = ak.with_field(events, objects[objects.genJetIdx >= 0][fields], spec.output)
    return events


def _copy(events: ak.Array, lumi: int) -> ak.Array:
    return ak.with_field(events, np.full(len(events), lumi, np.uint32), "luminosityBlock")


def _written(unit: Unit, after: ak.Array) -> dict[str, np.ndarray]:
    """The flat target columns the unit wrote (for a merging unit: only its new objects)."""
    columns = unit.spec.target_columns
    if unit.spec.outputs:  # event units with outputs: the drawn columns are not kept; check the written momenta
        return {f"{c}_{f}": ak.to_numpy(ak.flatten(after[c][f], axis=None)).astype(np.float64)
                for c in unit.spec.produces for f in after[c].fields}
    collection = after[unit.spec.output]
    if unit.spec.merge and unit.spec.match is None:
        collection = collection[collection.genJetIdx < 0]  # the input holds only gen-matched ones (_input)
    return {c: ak.to_numpy(ak.flatten(collection[c], axis=None)).astype(np.float64) for c in columns}


def measure(name: str, path: str, objects: int, chunk_events: int, seed: int) -> dict:
    unit = load_unit(name)
    events = _input(unit, path)
    events = events[: chunk_events] if chunk_events < len(events) else events
    ranges = unit.spec.ranges.targets
    drawn = nonfinite = outside = failed = copies = 0
    start = time.perf_counter()
    while drawn < objects:
        copies += 1
        chunk = _copy(events, copies)
        try:
            out = unit.run(chunk, seed=seed)
        except SamplingError as exc:
            failed += 1
            print(f"  {name}: chunk {copies} refused: {exc}", flush=True)
            if failed == MAX_REFUSED:
                break
            continue
        for column, values in _written(unit, out).items():
            low, high = ranges.get(column, (-np.inf, np.inf))
            finite = np.isfinite(values)
            nonfinite += int((~finite).sum())
            outside += int(((values < low) | (values > high))[finite].sum())
        if not len(values):
            raise SystemExit(f"{name}: no object drawn from {path}")
        drawn += len(values)
    elapsed = time.perf_counter() - start
    return {"unit": name, "input": path, "events": copies * len(events), "objects": drawn, "nonfinite": nonfinite,
            "outside": outside, "failed_chunks": failed, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10_000_000, help="objects to draw per unit (at least)")
    parser.add_argument("--units", default=",".join(INPUTS), help="comma-separated zoo units")
    parser.add_argument("--chunk-events", type=int, default=5_000, help="events of the input file per copy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'unit':<15} {'input':<34} {'events':>11} {'objects':>11} {'non-finite':>10} {'outside':>8} {'refused':>8} {'obj/s':>8}", flush=True)
    for name in args.units.split(","):
        r = measure(name, INPUTS[name], args.objects, args.chunk_events, args.seed)
        print(f"{r['unit']:<15} {r['input']:<34} {r['events']:>11,} {r['objects']:>11,} {r['nonfinite']:>10} {r['outside']:>8} "
              f"{r['failed_chunks']:>8} {r['objects'] / r['seconds']:>8,.0f}", flush=True)


if __name__ == "__main__":
    main()
