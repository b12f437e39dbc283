"""Writer throughput: flashsim's NanoAODWriter vs a bare uproot / pyarrow write of the same arrays.

    python benchmarks/bench_io.py --events 1000000

Prints events/s and MB/s (uncompressed payload) for ROOT and Parquet, and the ratio to the
bare library write done in the same run (the bar is >= 0.8).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import uproot

from flashsim.events import to_branches
from flashsim.io import NanoAODWriter

FIELDS = ["pt", "eta", "phi", "mass"] + [f"var{i}" for i in range(11)]
COLLECTIONS = ["Jet", "Muon", "Electron"]


def make_chunk(n: int, rng: np.random.Generator) -> ak.Array:
    """n events x 3 collections x 15 float32 fields, Poisson(4) objects each."""
    fields = {}
    for coll in COLLECTIONS:
        counts = rng.poisson(4, n)
        total = int(counts.sum())
        fields[coll] = ak.zip({f: ak.unflatten(rng.normal(0, 1, total).astype(np.float32), counts) for f in FIELDS})
    fields["event"] = np.arange(n, dtype=np.uint64)
    return ak.zip(fields, depth_limit=1)


def payload_mb(chunk: ak.Array) -> float:
    return sum(ak.to_numpy(ak.flatten(v, axis=None)).nbytes for v in to_branches(chunk).values()) / 1e6


def bare_uproot(chunks: list[ak.Array], path: Path) -> None:
    with uproot.recreate(path) as f:
        tree = None
        for chunk in chunks:
            data = {c: chunk[c] for c in COLLECTIONS} | {"event": ak.to_numpy(chunk.event)}
            if tree is None:
                tree = f.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()})
            tree.extend(data)


def bare_parquet(chunks: list[ak.Array], path: Path) -> None:
    writer = None
    for chunk in chunks:
        table = ak.to_arrow_table(ak.zip(to_branches(chunk), depth_limit=1), extensionarray=False, list_to32=True)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def flashsim_write(chunks: list[ak.Array], path: Path) -> None:
    with NanoAODWriter(path) as writer:
        for chunk in chunks:
            writer.write(chunk)


def timed(fn, chunks, path) -> float:
    start = time.perf_counter()
    fn(chunks, path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="best of N for each writer")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    chunks = [make_chunk(min(args.chunk, args.events - s), rng) for s in range(0, args.events, args.chunk)]
    mb = sum(payload_mb(c) for c in chunks)
    print(f"{args.events} events, {len(chunks)} chunks, {mb:.0f} MB uncompressed payload")
    print(f"{'format':8s} {'writer':10s} {'events/s':>12s} {'MB/s':>8s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, bare in (("root", bare_uproot), ("parquet", bare_parquet)):
            t_bare = min(timed(bare, chunks, Path(tmp) / f"bare.{fmt}") for _ in range(args.repeat))
            t_ours = min(timed(flashsim_write, chunks, Path(tmp) / f"flashsim.{fmt}") for _ in range(args.repeat))
            for name, t in (("bare", t_bare), ("flashsim", t_ours)):
                print(f"{fmt:8s} {name:10s} {args.events / t:12.0f} {mb / t:8.1f} {t_bare / t:6.2f}")


if __name__ == "__main__":
    main()
