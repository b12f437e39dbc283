"""Sampling and training throughput of each model type, side by side, on CPU.

For each type (maf_rqs, coupling_rqs, mean_quantile) and each size (parameter budgets, the
hidden width is searched to get close), print parameter count, sampling objects/s (batch of
``--batch`` context rows) and training samples/s (loss + backward + Adam step).

    python benchmarks/bench_models.py                 # 17 targets, 10 context, sizes 0.3M and 2M
    python benchmarks/bench_models.py --quick         # tiny smoke run
"""

from __future__ import annotations

import argparse
import time

import torch

from flashsim.models import build_model

BASE = {
    "maf_rqs": {"type": "maf_rqs", "layers": 5, "blocks": 2, "bins": 8},
    "coupling_rqs": {"type": "coupling_rqs", "layers": 5, "blocks": 2, "bins": 8},
    "mean_quantile": {"type": "mean_quantile", "layers": 4},
}


def sized_config(kind: str, budget: int, n_targets: int, n_context: int) -> dict:
    """The config of ``kind`` whose hidden width gives the parameter count closest to ``budget``."""
    best = None
    lo, hi = 4, 4096
    while lo < hi:  # parameter count grows with hidden: bisect
        mid = (lo + hi) // 2
        n = build_model({**BASE[kind], "hidden": mid}, n_targets, n_context).n_parameters()
        if n < budget:
            lo = mid + 1
        else:
            hi = mid
    for h in (lo - 1, lo):
        n = build_model({**BASE[kind], "hidden": h}, n_targets, n_context).n_parameters()
        if best is None or abs(n - budget) < abs(best[1] - budget):
            best = (h, n)
    return {**BASE[kind], "hidden": best[0]}


def _timeit(fn, repeats: int, warmup=None) -> float:
    (warmup or fn)()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(kind: str, cfg: dict, n_targets: int, n_context: int, batch: int, train_batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, n_targets, n_context)
    ctx = torch.randn(batch, n_context)
    gen = torch.Generator().manual_seed(0)
    t_sample = _timeit(lambda: model.sample(ctx, gen), repeats, warmup=lambda: model.sample(ctx[:100], gen))

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(train_batch, n_targets)
    c = torch.randn(train_batch, n_context)
    model.train()

    def step():
        loss = model.loss(x, c)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_train = _timeit(step, repeats)
    return {"params": model.n_parameters(), "hidden": cfg["hidden"], "sample": batch / t_sample,
            "train": train_batch / t_train}


def inverse_paths(units: list[str], rows: int, repeats: int) -> None:
    """The zoo flows' inverse on the same base noise: nflows' (masked spline, log-determinant) beside the
    sampling path flashsim uses (flashsim.models.spline_inverse), and their largest difference."""
    from flashsim.models.spline_inverse import sample_inverse
    from flashsim.unit import load_unit

    print(f"\nflow inverse of {rows:,} rows, best of {repeats}: nflows vs flashsim's sampling path (same run)")
    for name in units:
        model = load_unit(name).trained_model()
        flow = model.flow
        context = flow._embedding_net(torch.randn(rows, model.n_context))
        noise = torch.randn(rows, model.n_targets, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            t_nflows = _timeit(lambda: flow._transform.inverse(noise, context=context), repeats)
            t_fast = _timeit(lambda: sample_inverse(flow._transform, noise, context), repeats)
            diff = float((flow._transform.inverse(noise, context=context)[0] - sample_inverse(flow._transform, noise, context)).abs().max())
        print(f"{name:<10} nflows {rows / t_nflows:>10,.0f} rows/s   flashsim {rows / t_fast:>10,.0f} rows/s   "
              f"x{t_nflows / t_fast:.2f}   max |diff| {diff:.1e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=17)
    ap.add_argument("--context", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000, help="context rows per sampling call")
    ap.add_argument("--train-batch", type=int, default=2048)
    ap.add_argument("--sizes", type=float, nargs="+", default=[3e5, 2e6], help="parameter budgets")
    ap.add_argument("--types", nargs="+", default=list(BASE), choices=list(BASE))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and batches (smoke test)")
    ap.add_argument("--zoo", default="jet,fakejet,muon,met", help="zoo units whose flow inverse paths are compared ('' to skip)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows for the inverse comparison")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.batch, args.train_batch, args.repeats = [2e4], 1000, 256, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.targets} targets, "
          f"{args.context} context features; sampling batch {args.batch}, training batch {args.train_batch}; "
          f"best of {args.repeats}")
    header = f"{'type':<14} {'budget':>8} {'hidden':>6} {'params':>10} {'sample obj/s':>14} {'train samples/s':>16}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for kind in args.types:
            cfg = sized_config(kind, int(size), args.targets, args.context)
            r = bench(kind, cfg, args.targets, args.context, args.batch, args.train_batch, args.repeats)
            print(f"{kind:<14} {size:>8.1e} {r['hidden']:>6} {r['params']:>10,} {r['sample']:>14,.0f} {r['train']:>16,.0f}",
                  flush=True)
    if args.zoo:
        inverse_paths(args.zoo.split(","), args.rows, max(args.repeats, 2))


if __name__ == "__main__":
    main()
