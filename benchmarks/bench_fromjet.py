"""Fidelity of the object units sourced on GenJet (electron_fromjet, photon_fromjet; issue 24) on held-out refsim events.

    python benchmarks/bench_fromjet.py --input data/refsim2/test_ttbar.root --units electron_fromjet,photon_fromjet

Per unit: every target's noise-floor ratio (flash run on the GEN of the file vs the reco objects the unit stands for,
its training targets; paired, 8 splits), the classifier AUC beside the reference-halves AUC, and the rate at which a
GenJet holds such an object vs GenJet pT and hadron flavour: reference (binomial error) vs flash averaged over
``--oversample`` generations (error / sqrt(N)), the difference in units of its error.
"""

from __future__ import annotations

import argparse

import awkward as ak
import numpy as np
import torch

from flashsim.datasets import ExtractionReport, training_rows
from flashsim.io import read_events
from flashsim.unit import Unit, load_unit
from flashsim.validate.physics import physics_metric, unit_input

PT_EDGES = np.array([10, 20, 30, 50, 80, 150, 1000.0])
FLAVOURS = (0, 4, 5)


def flash_rate(unit: Unit, gen: ak.Array, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per selected GenJet (flat, in row order): the mean over ``seeds`` of whether the unit drew an object for it
    (one that passes its output selection), and the event of each GenJet."""
    index_column = "_sourceIdx"
    spec = unit.spec.model_copy(update={"carry": {**unit.spec.carry, index_column: "_index"}})
    tagged = Unit(spec, unit.context_pipeline, unit.target_pipeline, unit.model, unit.efficiency)
    rows = unit.rows(gen)
    counts = ak.to_numpy(ak.num(rows, axis=1))
    event = np.repeat(np.arange(len(gen)), counts)
    offsets = np.r_[0, np.cumsum(ak.to_numpy(ak.num(gen[spec.source.collection], axis=1)))]
    position = np.full(offsets[-1], -1, np.int64)  # source object -> its row
    position[offsets[event] + ak.to_numpy(ak.flatten(rows["_index"]))] = np.arange(len(event))
    held = np.zeros(len(event))
    for seed in seeds:
        _, outputs = tagged.collections(gen, seed)  # the streams Unit.run gives the unit (same name)
        drawn = outputs[spec.output]
        owner = np.repeat(np.arange(len(gen)), ak.to_numpy(ak.num(drawn, axis=1)))
        held[position[offsets[owner] + ak.to_numpy(ak.flatten(drawn[index_column]))]] += 1
    return held / len(seeds), event


def rate_table(unit: Unit, events: ak.Array, oversample: int) -> None:
    gen = unit_input(unit, events)
    rows = training_rows(unit, events, np.arange(len(events), dtype=np.int64), ExtractionReport())
    reference = rows["reconstructed"].astype(float)
    flash, _ = flash_rate(unit, gen, [1000 + k for k in range(oversample)])
    pt = rows["ctx.pt"]
    flavour = np.select([rows["ctx.hadronFlavour_is5"] > 0, rows["ctx.hadronFlavour_is4"] > 0], [5, 4], 0)
    print(f"\n{unit.name}: rate of GenJets holding such an object, reference vs flash ({oversample} generations); "
          f"overall {reference.mean():.4f} vs {flash.mean():.4f}")
    print(f"{'flavour':>7s} {'GenJet pT':>11s} {'jets':>7s} {'ref':>14s} {'flash':>14s} {'pull':>6s}")
    pulls = []
    for f in FLAVOURS:
        for lo, hi in zip(PT_EDGES[:-1], PT_EDGES[1:]):
            sel = (flavour == f) & (pt >= lo) & (pt < hi)
            n = int(sel.sum())
            if n < 50:
                continue
            r, fl = reference[sel].mean(), flash[sel].mean()
            er = np.sqrt(max(r * (1 - r), 1 / n) / n)
            ef = np.sqrt(max(fl * (1 - fl), 1 / n) / n / oversample)
            pull = (fl - r) / np.hypot(er, ef)
            pulls.append(pull)
            print(f"{f:7d} {lo:5.0f}-{hi:<5.0f} {n:7d} {r:7.4f}+-{er:.4f} {fl:7.4f}+-{ef:.4f} {pull:6.1f}")
    pulls_arr = np.array(pulls)
    print(f"bins {len(pulls_arr)}: |pull| > 2 in {int((abs(pulls_arr) > 2).sum())}, chi2/ndf {np.mean(pulls_arr**2):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="held-out refsim GEN+RECO files")
    parser.add_argument("--units", default="electron_fromjet,photon_fromjet")
    parser.add_argument("--oversample", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    events = read_events(args.input)
    for name in args.units.split(","):
        unit = load_unit(name)
        metric = physics_metric(unit, events, seed=11)
        print(f"\n== {name}: {len(events)} held-out events; noise-floor ratio per target (paired, 8 splits)")
        for target, ratio in metric.ratios.items():
            print(f"{target:22s} {ratio:6.2f}{'  > 2' if ratio > 2 else ''}")
        print(f"median R {metric.median_ratio:.2f} (bar 1.3), max R {metric.worst_ratio:.2f} ({metric.worst_target}) (bar 2)")
        print(f"classifier AUC {metric.auc:.3f}; reference halves {metric.auc_floor:.3f} (bar: floor + 0.05)")
        if unit.spec.match is not None and unit.spec.match.rank > 1:  # its rows are the GenJets already holding one
            print(f"\n{name}: no rate table (match.rank {unit.spec.match.rank}; the chain's figures are bench_units.py's)")
        else:
            rate_table(unit, events, args.oversample)


if __name__ == "__main__":
    main()
