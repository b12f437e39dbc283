"""Throughput and memory of the reference simulation (Pythia8 + parametric detector).

Prints, for W+jets at <nPU> = 0 and 35 in one run:
  * events/s of the whole refsim (``generate``: Pythia + GEN collections + detector),
  * events/s of the detector stage alone (``simulate_detector`` on pre-made GEN batches),
  * peak traced memory of one detector batch (tracemalloc) and the process peak RSS.

    python benchmarks/bench_refsim.py --events 1000 --batch-size 250
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import awkward as ak
import numpy as np

from flashsim.refsim import DetectorParams, PileupPool, build_gen, draw_pileup, generate, simulate_detector
from flashsim.refsim.pythia import Generator


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--process", default="wjets")
    ap.add_argument("--events", type=int, default=1000, help="events for the full-refsim timing")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--detector-repeats", type=int, default=3, help="passes over the GEN batch, detector timing")
    ap.add_argument("--pool-size", type=int, default=DetectorParams().pu_pool_size)
    ap.add_argument("--pileup", type=float, nargs="+", default=[0.0, 35.0])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    params = DetectorParams(pu_pool_size=args.pool_size)
    t0 = time.perf_counter()
    pool = PileupPool.load_or_generate(params.pu_pool_size)
    print(f"pileup pool: {pool.n} min-bias events ready in {time.perf_counter() - t0:.1f} s "
          f"({pool.counts.mean():.0f} visible particles/event)")

    # one GEN batch for the detector-only timing (Pythia excluded from that figure)
    gen_batch = build_gen(Generator(args.process, seed=args.seed).batch(args.batch_size), params)

    rows = []
    for mu in args.pileup:
        # --- whole refsim
        t0 = time.perf_counter()
        n = 0
        for chunk in generate(args.process, args.events, pileup=mu, seed=args.seed, params=params,
                              batch_size=args.batch_size):
            n += len(chunk)
        full = n / (time.perf_counter() - t0)

        # --- detector stage alone
        rng = np.random.default_rng(args.seed)
        true, npu = draw_pileup(args.batch_size, mu, params.pu_profile_width, rng)
        gen_batch["Pileup"] = ak.zip({"nPU": npu, "nTrueInt": true}, depth_limit=1)
        simulate_detector(gen_batch, pool, params, rng)  # warm-up (imports, fastjet banner)
        tracemalloc.start()
        t0 = time.perf_counter()
        for _ in range(args.detector_repeats):
            simulate_detector(gen_batch, pool, params, rng)
        det = args.detector_repeats * args.batch_size / (time.perf_counter() - t0)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append((mu, full, det, peak / 2**20, _peak_rss_mb()))

    print(f"\nprocess {args.process}, {args.events} events for refsim, batch {args.batch_size}")
    print(f"{'<nPU>':>6} {'refsim ev/s':>12} {'detector ev/s':>14} {'det. batch peak MiB':>20} {'process peak RSS MiB':>21}")
    for mu, full, det, peak, rss in rows:
        print(f"{mu:6.0f} {full:12.1f} {det:14.1f} {peak:20.0f} {rss:21.0f}")


if __name__ == "__main__":
    main()
