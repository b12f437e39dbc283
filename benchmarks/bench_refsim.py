"""Throughput and memory of the reference simulation (Pythia8 + parametric detector).

Prints, for W+jets at <nPU> = 0 and 35 in one run, with the electron/photon reconstruction on and off
(``DetectorParams.egamma``) on the same events:
  * events/s of the whole refsim (``generate``: Pythia + GEN collections + detector),
  * events/s of the detector stage alone (``simulate_detector`` on pre-made GEN batches),
  * peak traced memory of one detector batch (tracemalloc, the larger of on and off) and the process peak RSS.

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
    settings = {egamma: params.replace(egamma=egamma) for egamma in (True, False)}
    for mu in args.pileup:
        # on and off are timed in turn, chunk by chunk and pass by pass, so that a change of the machine's load
        # during the run falls on both alike
        # --- whole refsim (same seed: the same events either way)
        seconds = dict.fromkeys(settings, 0.0)
        n = dict.fromkeys(settings, 0)
        streams = {egamma: generate(args.process, args.events, pileup=mu, seed=args.seed, params=setting,
                                    batch_size=args.batch_size) for egamma, setting in settings.items()}
        for _ in range(-(-args.events // args.batch_size)):
            for egamma, stream in streams.items():
                t0 = time.perf_counter()
                n[egamma] += len(next(stream))
                seconds[egamma] += time.perf_counter() - t0
        full = {egamma: n[egamma] / seconds[egamma] for egamma in settings}

        # --- detector stage alone
        rng = np.random.default_rng(args.seed)
        true, npu = draw_pileup(args.batch_size, mu, params.pu_profile_width, rng)
        gen_batch["Pileup"] = ak.zip({"nPU": npu, "nTrueInt": true}, depth_limit=1)
        seconds = dict.fromkeys(settings, 0.0)
        peak = 0
        for setting in settings.values():
            simulate_detector(gen_batch, pool, setting, rng)  # warm-up (imports, fastjet banner)
        for _ in range(args.detector_repeats):
            for egamma, setting in settings.items():
                tracemalloc.start()
                t0 = time.perf_counter()
                simulate_detector(gen_batch, pool, setting, rng)
                seconds[egamma] += time.perf_counter() - t0
                peak = max(peak, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
        det = {egamma: args.detector_repeats * args.batch_size / seconds[egamma] for egamma in settings}
        rows.append((mu, full[True], full[False], det[True], det[False], peak / 2**20, _peak_rss_mb()))

    print(f"\nprocess {args.process}, {args.events} events for refsim, batch {args.batch_size}; e/g = with Electron and Photon")
    print(f"{'<nPU>':>6} {'refsim ev/s e/g':>16} {'refsim ev/s no e/g':>19} {'detector ev/s e/g':>18} "
          f"{'detector ev/s no e/g':>21} {'det. batch peak MiB':>20} {'process peak RSS MiB':>21}")
    for mu, full_on, full_off, det_on, det_off, peak_mb, rss in rows:
        print(f"{mu:6.0f} {full_on:16.1f} {full_off:19.1f} {det_on:18.1f} {det_off:21.1f} {peak_mb:20.0f} {rss:21.0f}")


if __name__ == "__main__":
    main()
