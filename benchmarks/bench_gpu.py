"""The default chain on a GPU: per-unit sampling speed at batch sizes from 10^4 to 10^7 objects (compute
alone: the model and its keyed random numbers on the device), then end to end (read GEN, every unit, write
ROOT and Parquet), and the peak GPU memory. One command, well under 10 minutes on an H200; it runs on a
CPU too (smaller sizes) so that it is tested where there is no GPU.

On a GPU machine with PyTorch but no package index (``../shared/gpu/prepare.sh pydantic`` here first, and
carry ``.gpu-wheels`` and the GEN file, e.g. ``data/refsim/test_ttbar.root``)::

    pip install -q --no-index --find-links .gpu-wheels awkward uproot vector nflows pydantic && \\
    PYTHONPATH=. python3 benchmarks/bench_gpu.py --input data/refsim/test_ttbar.root
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from flashsim.chain import Chain
from flashsim.io import read_events
from flashsim.locations import DEFAULT_CHAIN
from flashsim.streams import RowNoise, mix


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sampling(chain: Chain, sizes: list[int], device: torch.device) -> None:
    """Objects/s of each unit's model (and classifier) at each batch size: keyed noise and the flow on the device."""
    print(f"\n== compute alone on {device}: model.sample of N rows (keyed Philox noise included)")
    print(f"{'unit':10s} {'model':14s} " + " ".join(f"{n:>12,d}" for n in sizes) + "   (objects/s)")
    for unit in chain.units:
        models = [("model", unit.model)] + [(name, getattr(unit, name)) for name in ("efficiency", "multiplicity")
                                            if getattr(unit, name) is not None]
        for name, model in models:
            assert model is not None
            rates = []
            for n in sizes:
                context = torch.randn(n, model.n_context, device=device)
                noise = RowNoise(mix(np.arange(n, dtype=np.uint64), np.uint64(n)))
                model.sample(context[:1000], noise.subset(slice(0, 1000)))  # warm-up
                _sync(device)
                start = time.perf_counter()
                model.sample(context, noise)
                _sync(device)
                rates.append(n / (time.perf_counter() - start))
                del context
            print(f"{unit.name:10s} {name:14s} " + " ".join(f"{r:12,.0f}" for r in rates))


def end_to_end(chain: Chain, gen: Path, copies: int, batch_size: int, device: torch.device) -> None:
    """Events/s of Chain.generate (read, every unit, write) on ``copies`` x the input, to ROOT and to Parquet."""
    events = read_events(gen)
    events = events[[f for f in events.fields if f not in chain.outputs]]
    big = ak.concatenate([events] * copies) if copies > 1 else events
    big = ak.with_field(big, np.arange(len(big), dtype=np.uint64), "event")  # distinct events, distinct random numbers
    with tempfile.TemporaryDirectory() as tmp:
        from flashsim.io import write_events

        source = write_events(big, Path(tmp) / "gen.root")
        print(f"\n== end to end on {device}: {len(big):,} ttbar events ({copies} x {gen.name}), batch {batch_size:,}")
        for fmt in ("root", "parquet"):
            _sync(device)
            start = time.perf_counter()
            n = chain.generate(source, Path(tmp) / f"flash.{fmt}", seed=1, batch_size=batch_size, step_size=200_000)
            _sync(device)
            elapsed = time.perf_counter() - start
            print(f"Chain.generate -> {fmt:8s} {elapsed:8.2f} s {n / elapsed:12,.0f} events/s")
        chunk = read_events(source)
        start = time.perf_counter()
        flash = chain.run(chunk, seed=1, batch_size=batch_size)
        _sync(device)
        elapsed = time.perf_counter() - start
        objects = {c: int(ak.sum(ak.num(flash[c]))) for c in ("Jet", "Muon") if c in flash.fields}
        print(f"Chain.run (units only) {elapsed:8.2f} s {len(chunk) / elapsed:12,.0f} events/s  ({objects})")


def main() -> None:
    warnings.filterwarnings("ignore", message=".*without a GenPart collection")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="GEN NanoAOD (e.g. data/refsim/test_ttbar.root)")
    parser.add_argument("--chain", default=",".join(DEFAULT_CHAIN))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default=None, help="comma-separated rows per model call (default: 1e4..1e7 on a GPU, 1e3..1e5 on a CPU)")
    parser.add_argument("--copies", type=int, default=None, help="input copies for the end-to-end run (default: 40 on a GPU, 1 on a CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="objects per model call end to end (default 1e6 GPU, 1e5 CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    sizes = [int(float(s)) for s in (args.sizes or ("1e4,1e5,1e6,1e7" if gpu else "1e3,1e4,1e5")).split(",")]
    chain = Chain(args.chain.split(","), device=device)
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    print(f"chain {chain} on {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    sampling(chain, sizes, device)
    end_to_end(chain, args.input, args.copies or (40 if gpu else 1), args.batch_size or (1_000_000 if gpu else 100_000), device)
    if gpu:
        print(f"\npeak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
