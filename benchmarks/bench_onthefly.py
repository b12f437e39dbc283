"""Flash simulation on the fly in coffea beside the file route, on the same GEN file, one process.

    python benchmarks/bench_onthefly.py --input gen.root --chain muon,jet,fakejet,met --oversample 1

On the fly: GEN NanoEvents (coffea, ``--mode`` virtual as in coffea's processor.Runner, or eager) ->
``flashsim.nanoevents.simulate``. File route: ``Chain.generate`` with ``keep_gen`` to a ROOT file, then NanoEvents read
from it. Both end with the jets' matched gen jets and the MET materialised. Beside them, the chain alone
(``Chain.process`` on the GEN record in memory), which both routes run: a route's time less the chain's is its own cost.
Without ``--input`` a refsim ttbar GEN file of ``--events`` events is made first. Prints events/s (GEN events), best of
``--repeat``, after a warm-up on 100 events (units loaded, coffea's numba kernels compiled).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import awkward as ak
import torch
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

from flashsim.chain import Chain
from flashsim.io import read_events
from flashsim.locations import DEFAULT_CHAIN
from flashsim.nanoevents import simulate


def _nanoevents(path: Path, mode: str = "eager") -> ak.Array:
    return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode=mode).events()


def _touch(events: ak.Array) -> float:
    """What an analysis reads: every jet's matched gen jet pt and the MET."""
    return float(ak.sum(ak.fill_none(events.Jet.matched_gen.pt, 0.0))) + float(ak.sum(events.MET.pt))


def _best(fn, repeat: int) -> tuple[float, float]:
    best, out = float("inf"), 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, help="GEN NanoAOD (default: a refsim ttbar file of --events)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--chain", default=",".join(DEFAULT_CHAIN))
    parser.add_argument("--oversample", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--mode", choices=["virtual", "eager"], default="virtual", help="how coffea reads both routes' files")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # NanoAODSchema warns of every cross-reference a GEN file lacks
    chain = Chain(args.chain.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = args.input
        if source is None:
            source = work / "gen.root"
            subprocess.run([sys.executable, "-m", "flashsim.cli", "refsim", "--process", "ttbar", "--events", str(args.events),
                            "--seed", "1", "--gen-only", "-o", str(source)], check=True, capture_output=True)
        events = _nanoevents(source)
        _touch(simulate(events[:100], chain, seed=1))  # warm-up

        def on_the_fly() -> float:
            return _touch(simulate(_nanoevents(source, args.mode), chain, seed=1, oversample=args.oversample))

        def file_route() -> float:
            chain.generate(source, work / "flash.root", seed=1, keep_gen=True, oversample=args.oversample)
            return _touch(_nanoevents(work / "flash.root", args.mode))

        gen = read_events(source)
        chain_s, _ = _best(lambda: len(chain.process(gen, seed=1, keep_gen=True, oversample=args.oversample)), args.repeat)
        fly_s, fly = _best(on_the_fly, args.repeat)
        file_s, from_file = _best(file_route, args.repeat)
    n = len(events)
    print(f"{n} GEN events x {args.oversample} ({source if args.input else 'refsim ttbar'}), chain {chain}, "
          f"{torch.get_num_threads()} torch threads, coffea {args.mode} mode, best of {args.repeat}")
    print(f"chain alone (Chain.process in memory):    {n / chain_s:8.0f} events/s ({chain_s:.2f} s)")
    print(f"on the fly (NanoEvents -> simulate):      {n / fly_s:8.0f} events/s ({fly_s:.2f} s)")
    print(f"file route (generate -> NanoEvents read): {n / file_s:8.0f} events/s ({file_s:.2f} s)")
    print(f"same analysis sums: {fly == from_file} ({fly:.6g} vs {from_file:.6g})")


if __name__ == "__main__":
    main()
