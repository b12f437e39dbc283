"""Sampling and training throughput of each model type, side by side, on CPU.

For each type (maf_rqs, coupling_rqs, mean_quantile) and each size (parameter budgets, the
hidden width is searched to get close), print parameter count, sampling objects/s (batch of
``--batch`` context rows) and training samples/s (loss + backward + Adam step). Then, for the zoo's
flows, nflows' inverse beside flashsim's sampling path, and for one of them (``--flops-unit``) the
sampling FLOP/s beside a same-run matrix product, with the options tried side by side. ``--precision`` compares, for some
zoo flows, float32 and bfloat16 conditioner networks (bfloat16 weights, as flashsim samples with ``precision="bfloat16"``,
and float32 weights under ``torch.autocast``) in one run, each timed in turn, beside float32 and bfloat16 matrix products.

    python benchmarks/bench_models.py                 # 17 targets, 10 context, sizes 0.3M and 2M
    python benchmarks/bench_models.py --quick         # tiny smoke run
    python benchmarks/bench_models.py --quick --zoo '' --flops-unit jet --compile   # the jet flow's FLOP/s and options
    OMP_NUM_THREADS=1 python benchmarks/bench_models.py --threads 1 --types --zoo '' --flops-unit '' --precision jet,fakejet,muon
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

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
            expected, got = flow._transform.inverse(noise, context=context)[0], sample_inverse(flow._transform, noise, context)
            diff = (expected - got).abs()  # float rounding, magnified where a bin is narrow in y (the inverse is steep)
        print(f"{name:<10} nflows {rows / t_nflows:>10,.0f} rows/s   flashsim {rows / t_fast:>10,.0f} rows/s   "
              f"x{t_nflows / t_fast:.2f}   max |diff| {float(diff.max()):.1e}, {float((diff > 1e-5).float().mean()):.2%} of values "
              "beyond 1e-5", flush=True)


def conditioner_flops(flow: torch.nn.Module) -> int:
    """Floating-point operations per row of a flow's inverse counted from its conditioner networks' linear layers
    (2 x in x out each); the splines, the LU mixing solves and every elementwise operation are not counted."""
    from nflows.transforms.coupling import CouplingTransform

    return sum(2 * linear.in_features * linear.out_features
               for layer in flow._transform._transforms if isinstance(layer, CouplingTransform)
               for linear in layer.transform_net.modules() if isinstance(linear, torch.nn.Linear))


def sampling_options(name: str, rows: int, repeats: int, compile_flow: bool) -> None:
    """FLOP/s of a zoo flow's sampling inverse beside a same-run matrix product (rows x 128 x 128), and the options
    tried for it side by side: threads, no_grad vs inference_mode, the CPU block (rows per thread), torch.compile."""
    import flashsim.models.spline_inverse as inverse
    from flashsim.unit import load_unit

    model = load_unit(name).trained_model()
    flow, flops = model.flow, conditioner_flops(model.flow)
    context = flow._embedding_net(torch.randn(rows, model.n_context))
    noise = torch.randn(rows, model.n_targets, generator=torch.Generator().manual_seed(1))
    a, b = torch.randn(rows, 128), torch.randn(128, 128)
    print(f"\n{name} flow: {model.n_parameters():,} parameters, {flops / 1e6:.2f} MFLOP per row in its conditioners' linear "
          f"layers (2 x in x out; splines, LU solves and elementwise operations not counted); {rows:,} rows, best of {repeats}")
    print(f"{'option':<40} {'threads':>7} {'rows/s':>10} {'GFLOP/s':>8} {'matmul GFLOP/s':>15} {'ratio':>6}")
    default_block = inverse.CPU_BLOCK
    threads = torch.get_num_threads()

    def row(label: str, fn, mode=torch.no_grad) -> None:
        with mode():
            t = _timeit(fn, repeats)
            t_mm = _timeit(lambda: a @ b, repeats)
        mm = 2 * rows * 128 * 128 / t_mm
        print(f"{label:<40} {torch.get_num_threads():>7} {rows / t:>10,.0f} {flops * rows / t / 1e9:>8.1f} {mm / 1e9:>15.1f} "
              f"{flops * rows / t / mm:>6.0%}", flush=True)

    for n_threads in sorted({1, threads}):
        torch.set_num_threads(n_threads)
        row("nflows inverse", lambda: flow._transform.inverse(noise, context=context))
        row(f"flashsim, no_grad, {default_block} rows/thread", lambda: inverse.sample_inverse(flow._transform, noise, context))
        row(f"flashsim, inference_mode, {default_block} rows/thread",
            lambda: inverse.sample_inverse(flow._transform, noise, context), torch.inference_mode)
        for block in (512, 8192, rows):
            inverse.CPU_BLOCK = block
            row(f"flashsim, no_grad, {block} rows/thread", lambda: inverse.sample_inverse(flow._transform, noise, context))
        inverse.CPU_BLOCK = default_block
    torch.set_num_threads(threads)
    if compile_flow:  # inductor compiles one graph per block shape; the first call pays the compilation
        compiled = torch.compile(inverse.sample_inverse, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(flow._transform, noise, context)
        print(f"torch.compile of the sampling path: compiled in {time.perf_counter() - start:.0f} s", flush=True)
        row("flashsim, no_grad, torch.compile", lambda: compiled(flow._transform, noise, context))


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best time of each function, timed in turn ``repeats`` times after a warm-up (on a loaded machine, a slow
    spell then hits every function alike)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def precision_comparison(units: list[str], rows: int, repeats: int) -> None:
    """Each flow's sampling inverse and its conditioner networks alone with float32 weights, bfloat16 weights
    (flashsim's ``precision="bfloat16"``) and float32 weights under ``torch.autocast(bfloat16)``, all timed in turn
    in one run beside float32 and bfloat16 matrix products of rows x 128 x 128; FLOP/s count the conditioners'
    linear layers (:func:`conditioner_flops`)."""
    from flashsim.models.spline_inverse import CPU_BLOCK, _CouplingInverse, _fast, sample_inverse
    from flashsim.unit import load_unit

    def autocast(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn()
        return run

    a, b = torch.randn(rows, 128), torch.randn(128, 128)
    a16, b16 = a.bfloat16(), b.bfloat16()
    block = CPU_BLOCK * torch.get_num_threads()
    print(f"\nfloat32 vs bfloat16 conditioners: {rows:,} rows, {torch.get_num_threads()} threads, best of {repeats} timed in turn; "
          "GFLOP/s of the conditioners' linear layers; matmul: rows x 128 x 128 in the same run")
    print(f"{'flow':<8} {'conditioners':<22} {'flow rows/s':>11} {'x f32':>6} {'GFLOP/s':>8} {'/f32 mm':>8} {'/bf16 mm':>9} "
          f"{'conditioners alone ms':>22} {'share':>6}")
    for name in units:
        model = load_unit(name).trained_model()
        flow, flops = model.flow, conditioner_flops(model.flow)
        context = flow._embedding_net(torch.randn(rows, model.n_context))
        noise = torch.randn(rows, model.n_targets, generator=torch.Generator().manual_seed(1))
        layers = [layer for layer in flow._transform._transforms if _fast(layer)]

        def conditioners(dtype: torch.dtype) -> Callable[[], object]:
            def run() -> None:  # every fast layer's conditioner on the base noise, in sample_inverse's blocks
                steps = [_CouplingInverse(layer, dtype) for layer in layers]
                for start in range(0, rows, block):
                    for step in steps:
                        step.spline_parameters(noise[start : start + block, step.layer.identity_features],
                                               context[start : start + block])
            return run

        paths = {"float32": lambda: sample_inverse(flow._transform, noise, context),
                 "bfloat16 weights": lambda: sample_inverse(flow._transform, noise, context, torch.bfloat16),
                 "float32 under autocast": autocast(lambda: sample_inverse(flow._transform, noise, context))}
        alone = {"float32": conditioners(torch.float32), "bfloat16 weights": conditioners(torch.bfloat16),
                 "float32 under autocast": autocast(conditioners(torch.float32))}
        with torch.no_grad():
            times = _interleaved({**{("flow", k): v for k, v in paths.items()}, **{("alone", k): v for k, v in alone.items()},
                                  ("mm", "float32"): lambda: a @ b, ("mm", "bfloat16"): lambda: a16 @ b16}, repeats)
        mm32, mm16 = (2 * rows * 128 * 128 / times[("mm", k)] for k in ("float32", "bfloat16"))
        for label in paths:
            t, t_alone = times[("flow", label)], times[("alone", label)]
            rate = flops * rows / t
            print(f"{name:<8} {label:<22} {rows / t:>11,.0f} {times[('flow', 'float32')] / t:>6.2f} {rate / 1e9:>8.1f} "
                  f"{rate / mm32:>8.0%} {rate / mm16:>9.0%} {1e3 * t_alone:>22.1f} {t_alone / t:>6.0%}", flush=True)
        print(f"{name:<8} {'matmul (same run)':<22} float32 {mm32 / 1e9:,.0f} GFLOP/s, bfloat16 {mm16 / 1e9:,.0f} GFLOP/s "
              f"(x{mm16 / mm32:.1f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=17)
    ap.add_argument("--context", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10_000, help="context rows per sampling call")
    ap.add_argument("--train-batch", type=int, default=2048)
    ap.add_argument("--sizes", type=float, nargs="+", default=[3e5, 2e6], help="parameter budgets")
    ap.add_argument("--types", nargs="*", default=list(BASE), choices=list(BASE), help="model types timed (none: skip)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and batches (smoke test)")
    ap.add_argument("--zoo", default="jet,fakejet,muon,met", help="zoo units whose flow inverse paths are compared ('' to skip)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows for the inverse comparison")
    ap.add_argument("--flops-unit", default="jet", help="zoo unit whose sampling FLOP/s and options are measured ('' to skip)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the sampling path (slow to compile)")
    ap.add_argument("--precision", default="", help="zoo units whose flows are timed with float32 and bfloat16 conditioners "
                    "side by side, e.g. jet,fakejet,muon ('' to skip)")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.batch, args.train_batch, args.repeats = [2e4], 1000, 256, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.targets} targets, "
          f"{args.context} context features; sampling batch {args.batch}, training batch {args.train_batch}; "
          f"best of {args.repeats}")
    if args.types:
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
    if args.flops_unit:
        sampling_options(args.flops_unit, args.rows, max(args.repeats, 3), args.compile)
    if args.precision:
        precision_comparison(args.precision.split(","), args.rows, max(args.repeats, 5))


if __name__ == "__main__":
    main()
