"""End-to-end generation speed of a chain of trained units, including I/O, beside the refsim
detector stage on the same events (the "full simulation" flashsim replaces).

    python benchmarks/bench_chain.py --input data/refsim2/test_ttbar.root
    python benchmarks/bench_chain.py --input data/refsim2/test_ttbar.root --chain muon,jet,fakejet,met,electron,photon \
        --baseline muon,jet,fakejet,met

Prints events/s for: reading GEN, each unit, writing ROOT, the whole `Chain.generate`, and the
refsim detector stage (Pythia excluded), with the device, batch size and thread count; ``--baseline``
times a second chain end to end in the same run (the cost of some units). ``--compare-precision bfloat16`` times
the same chain with its flows' conditioner networks in bfloat16 beside it (each unit and end to end, in turn), and
says how far its objects move from the first chain's with the same random numbers.

    python benchmarks/bench_chain.py --input data/refsim2/test_ttbar.root --threads 1 --processes 1 --compare-precision bfloat16
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from flashsim.chain import Chain
from flashsim.io import read_events, write_events
from flashsim.locations import DEFAULT_CHAIN
from flashsim.models import PRECISIONS
from flashsim.processes import available_cores
from flashsim.streams import RowNoise, mix


def _timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def detector_stage_rate(process: str, n: int, pileup: float, seed: int) -> float:
    """Events/s of the refsim detector alone on pre-made Pythia GEN events (as benchmarks/bench_refsim.py)."""
    from flashsim.refsim import DetectorParams, Generator, PileupPool, build_gen, draw_pileup, simulate_detector

    params = DetectorParams()
    pool = PileupPool.load_or_generate(params.pu_pool_size)
    gen = build_gen(Generator(process, seed=seed).batch(n), params)
    rng = np.random.default_rng(seed)
    true, npu = draw_pileup(n, pileup, params.pu_profile_width, rng)
    gen["Pileup"] = ak.zip({"nPU": npu, "nTrueInt": true}, depth_limit=1)
    simulate_detector(gen, pool, params, rng)  # warm-up
    start = time.perf_counter()
    simulate_detector(gen, pool, params, rng)
    return n / (time.perf_counter() - start)


def _keyed_noise(n_rows: int, n_drawn: int, n_targets: int) -> None:
    """The random numbers a unit draws: keys and an efficiency uniform for its ``n_rows`` rows, the model's normals for
    the ``n_drawn`` objects it draws."""
    RowNoise(mix(np.arange(n_rows, dtype=np.uint64), np.uint64(1))).derive("efficiency").uniform(n_rows, 0, torch.device("cpu"), torch.float32)
    objects = RowNoise(mix(np.arange(n_drawn, dtype=np.uint64), np.uint64(2)))
    objects.derive("model").normal(n_drawn, n_targets, 0, torch.device("cpu"), torch.float32)


def moved(first: ak.Array, second: ak.Array, collection: str, tolerance: float = 1e-3) -> str:
    """How far ``collection``'s pt moved between two runs with the same random numbers: objects matched by event and
    gen index (unmatched ones only counted), or one per event; the fraction beyond ``tolerance`` relative."""
    a, b = first[collection], second[collection]
    if a.ndim == 1:
        x, y, unmatched = ak.to_numpy(a.pt), ak.to_numpy(b.pt), ""
    else:
        index = next(f for f in a.fields if f.startswith("gen") and f.endswith("Idx"))
        ma, mb = a[a[index] >= 0], b[b[index] >= 0]
        unmatched = f"; unmatched objects {int(ak.sum(a[index] < 0)):,} vs {int(ak.sum(b[index] < 0)):,}"
        if not ak.all(ak.num(ma) == ak.num(mb)):
            return f"{collection}: matched objects differ ({int(ak.sum(ak.num(ma))):,} vs {int(ak.sum(ak.num(mb))):,}){unmatched}"
        x, y = (ak.to_numpy(ak.flatten(m.pt[ak.argsort(m[index])])) for m in (ma, mb))
    relative = np.abs(y / x - 1)
    return (f"{collection}: {np.mean(relative > tolerance):.1%} of {len(x):,} pt values differ by more than {tolerance:g} relative "
            f"(median {np.median(relative):.1e}, 99 % {np.quantile(relative, 0.99):.1e}, max {relative.max():.1e}){unmatched}")


def main() -> None:
    warnings.filterwarnings("ignore", message=".*without a GenPart collection")  # GEN is not written here
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="GEN (or GEN+RECO) NanoAOD file")
    parser.add_argument("--chain", default=",".join(DEFAULT_CHAIN))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--processes", type=int, default=available_cores(), help="worker processes for the second generate")
    parser.add_argument("--step-size", type=int, default=2_000, help="events per chunk with --processes")
    parser.add_argument("--refsim-events", type=int, default=500, help="events for the detector-stage comparison (0: skip)")
    parser.add_argument("--precision", default="float32", choices=list(PRECISIONS), help="of the flows' conditioner networks")
    parser.add_argument("--compare-precision", default=None, choices=list(PRECISIONS),
                        help="also time the chain in this precision, in turn with the first, and compare their objects")
    parser.add_argument("--baseline", default=None, help="another chain (e.g. without some units) timed end to end on the same "
                        "events in the same run, side by side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chain = Chain(args.chain.split(","), device=args.device, precision=args.precision)
    other = None if args.compare_precision is None else Chain(args.chain.split(","), args.device, args.compare_precision)
    gen_collections = sorted(chain.inputs | {"run", "luminosityBlock", "event"})

    t_read, events = _timed(lambda: read_events(args.input, collections=[c for c in gen_collections if c != "Jet"] + ["Pileup"]), 1)
    n = len(events)
    print(f"chain {chain} on {chain.device} ({args.threads} threads, batch {args.batch_size}, {args.precision} conditioners), "
          f"{n} events from {args.input}")
    print(f"{'stage':28s} {'s':>8s} {'events/s':>10s} {'objects/s':>10s}")
    print(f"{'read GEN':28s} {t_read:8.3f} {n / t_read:10.0f}")
    current = events
    total_units = 0.0
    for unit in chain.units:
        t, out = _timed(lambda unit=unit, current=current: unit.run(current, seed=1, device=chain.device, batch_size=args.batch_size), args.repeat)
        made = out[unit.spec.output]
        objects = int(ak.sum(ak.num(made))) if made.ndim == 2 else len(made)
        if unit.spec.merge:
            objects -= int(ak.sum(ak.num(current[unit.spec.output])))
        total_units += t
        print(f"{'unit ' + unit.name:28s} {t:8.3f} {n / t:10.0f} {objects / t:10.0f}")
        if other is not None:  # the same unit in the other precision on the same input, timed in turn with the first
            mine = other.units[chain.units.index(unit)]
            both = [_timed(lambda u=u, current=current: u.run(current, seed=1, device=chain.device, batch_size=args.batch_size), 1)[0]
                    for _ in range(args.repeat) for u in (unit, mine)]
            t_first, t_other = min(both[0::2]), min(both[1::2])
            print(f"{'  ' + args.compare_precision:28s} {t_other:8.3f} {n / t_other:10.0f} {objects / t_other:10.0f}  "
                  f"(x{t_first / t_other:.2f} the {args.precision} unit timed in turn: {t_first:.3f} s)")
        rows = unit.rows(current)
        n_rows = int(ak.sum(ak.num(rows))) if rows is not None else n
        n_drawn = min(objects, n_rows) if unit.spec.type == "object" else objects  # written objects: a lower bound of those drawn
        features = unit.target_pipeline.n_features
        t_noise, _ = _timed(lambda n_rows=n_rows, n_drawn=n_drawn, features=features: _keyed_noise(n_rows, n_drawn, features), args.repeat)
        print(f"{'  of which keyed noise':28s} {t_noise:8.3f} {'':10s} {n_rows / t_noise:10.0f}  ({100 * t_noise / t:.0f} % of the unit: "
              f"a uniform for {n_rows} rows, Philox normals for {n_drawn} objects x {features} targets)")
        current = out
    with tempfile.TemporaryDirectory() as tmp:
        keep = ["run", "luminosityBlock", "event"] + chain.outputs
        t_write, _ = _timed(lambda: write_events(current[[k for k in keep if k in current.fields]], Path(tmp) / "w.root"), args.repeat)
        print(f"{'write ROOT':28s} {t_write:8.3f} {n / t_write:10.0f}")
        print(f"{'all units (in memory)':28s} {total_units:8.3f} {n / total_units:10.0f}")
        t_all, _ = _timed(lambda: chain.generate(args.input, Path(tmp) / "flash.root", seed=1, batch_size=args.batch_size), args.repeat)
        flash_rate = n / t_all
        print(f"{'Chain.generate end to end':28s} {t_all:8.3f} {flash_rate:10.0f}  (1 process, {args.threads} threads)")
        if args.baseline:
            baseline = Chain(args.baseline.split(","), device=args.device)
            t_base, _ = _timed(lambda: baseline.generate(args.input, Path(tmp) / "base.root", seed=1, batch_size=args.batch_size),
                               args.repeat)
            print(f"{'  baseline ' + args.baseline:28s} {t_base:8.3f} {n / t_base:10.0f}  (1 process, {args.threads} threads; "
                  f"the chain above takes {100 * (t_all / t_base - 1):+.0f} % time)")
        if other is not None:
            paths = [Path(tmp) / f"{p}.root" for p in (args.precision, args.compare_precision)]
            both = [_timed(lambda c=c, path=path: c.generate(args.input, path, seed=1, batch_size=args.batch_size), 1)[0]
                    for _ in range(args.repeat) for c, path in zip((chain, other), paths)]
            t_first, t_other = min(both[0::2]), min(both[1::2])
            print(f"{'  ' + args.compare_precision:28s} {t_other:8.3f} {n / t_other:10.0f}  (1 process, {args.threads} threads; "
                  f"x{t_first / t_other:.2f} the {args.precision} chain timed in turn: {n / t_first:,.0f} events/s)")
            first, second = chain.run(events, seed=1), other.run(events, seed=1)
            for collection in chain.outputs:
                print(f"  {args.compare_precision} vs {args.precision}, same random numbers: {moved(first, second, collection)}")
        if args.processes > 1:
            t_par, _ = _timed(lambda: chain.generate(args.input, Path(tmp) / "flash_p.root", seed=1, batch_size=args.batch_size,
                                                     step_size=args.step_size, processes=args.processes), args.repeat)
            print(f"{'Chain.generate end to end':28s} {t_par:8.3f} {n / t_par:10.0f}  ({args.processes} processes, 1 thread each, "
                  f"{args.step_size} events per chunk)")
            flash_rate = max(flash_rate, n / t_par)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS) {peak:.0f} MiB")
    if args.refsim_events:
        rate = detector_stage_rate("ttbar", args.refsim_events, 35.0, 5)
        print(f"refsim detector stage (ttbar, pileup 35, Pythia excluded): {rate:.0f} events/s")
        print(f"flashsim end to end is {flash_rate / rate:.1f}x the refsim detector stage on this machine")


if __name__ == "__main__":
    main()
