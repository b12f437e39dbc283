"""Peak memory of `flashsim generate` against the input size: the chain streams chunk by chunk, so the peak
should stay flat when the input grows. Each size runs in a fresh process (peak RSS of that process).

    python benchmarks/bench_memory.py --input data/refsim/test_ttbar.root --events 20000,100000

The inputs are written copy by copy of the given file (new event numbers), in a temporary directory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import awkward as ak
import numpy as np

from flashsim.chain import EVENT_ID_COLUMNS, GEN_PREFIXES
from flashsim.locations import DEFAULT_CHAIN

CHILD = """
import resource, sys, warnings
warnings.filterwarnings("ignore")
from flashsim.chain import Chain
chain = Chain(sys.argv[3].split(","))
n = chain.generate(sys.argv[1], sys.argv[2], seed=1, step_size=int(sys.argv[4]))
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    warnings.filterwarnings("ignore", message=".*without a GenPart collection")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="GEN NanoAOD, repeated (new event numbers) up to each size")
    parser.add_argument("--events", default="20000,100000", help="comma-separated input sizes")
    parser.add_argument("--chain", default=",".join(DEFAULT_CHAIN))
    parser.add_argument("--step-size", type=int, default=10_000, help="events per chunk (what bounds memory)")
    args = parser.parse_args()
    from flashsim.io import NanoAODWriter, read_events

    base = read_events(args.input)
    base = base[[f for f in base.fields if f in EVENT_ID_COLUMNS or f.startswith(GEN_PREFIXES)]]  # GEN input only
    print(f"chain {args.chain}, chunks of {args.step_size:,} events, input {args.input} repeated")
    print(f"{'events':>10s} {'input MB':>9s} {'peak RSS MiB':>13s} {'s':>7s} {'events/s':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(float(s)) for s in args.events.split(",")):
            gen = Path(tmp) / f"gen_{n}.root"
            with NanoAODWriter(gen) as writer:
                for first in range(0, n, len(base)):
                    copy = base[: n - first]
                    writer.write(ak.with_field(copy, np.arange(first, first + len(copy), dtype=np.uint64), "event"))
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", CHILD, str(gen), str(Path(tmp) / "out.root"), args.chain,
                                   str(args.step_size)], capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - start
            written, peak = done.stdout.split()
            print(f"{int(written):>10,d} {gen.stat().st_size / 1e6:>9.1f} {float(peak):>13.0f} {elapsed:>7.1f} {n / elapsed:>9,.0f}",
                  flush=True)
    print(f"(this process, which built the inputs: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
