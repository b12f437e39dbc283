"""``make demo``: a small refsim GEN+RECO sample, the default chain on its GEN part, and a validation report.

    python -m flashsim.demo --out demo --events 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flashsim.chain import DEFAULT_CHAIN, Chain
from flashsim.io import NanoAODWriter, read_events
from flashsim.locations import find_units, unit_search_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--process", default="wjets")
    parser.add_argument("--pileup", type=float, default=35.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from flashsim.refsim import generate as refsim

    args.out.mkdir(parents=True, exist_ok=True)
    reference = args.out / f"refsim_{args.process}.root"
    start = time.perf_counter()
    with NanoAODWriter(reference) as writer:
        for chunk in refsim(args.process, args.events, pileup=args.pileup, seed=args.seed):
            writer.write(chunk)
    print(f"[1/3] reference simulation: {args.events} {args.process} events at pileup {args.pileup:g} "
          f"in {time.perf_counter() - start:.1f} s -> {reference}")

    units = find_units()
    trained = [name for name in DEFAULT_CHAIN if name in units and (units[name] / "model.safetensors").is_file()]
    if not trained:
        print(f"[2/3] no trained unit in {', '.join(map(str, unit_search_path()))} yet: train one with `flashsim train <unit>`; stopping here")
        return 0
    chain = Chain(trained, device="auto")
    flash = args.out / f"flash_{args.process}.root"
    start = time.perf_counter()
    written = chain.generate(reference, flash, seed=args.seed, keep_gen=True)
    elapsed = time.perf_counter() - start
    print(f"[2/3] flashsim chain {chain}: {written} events in {elapsed:.2f} s ({written / elapsed:,.0f} events/s) -> {flash}")

    from flashsim.validate import validate

    report_dir = args.out / "report"
    validate(read_events(flash), read_events(reference), collections=chain.outputs, out_dir=report_dir)
    print(f"[3/3] validation report against the refsim RECO: {report_dir / 'report.html'} (metrics: {report_dir / 'metrics.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
