"""Training throughput of a zoo unit with its own recipe: samples/s and the share of time spent
waiting for data (batch gathering), per epoch, on the chosen device.

    python benchmarks/bench_train.py --unit jet --epochs 2 --max-rows 200000

Runs the real training command (`flashsim.train.train_unit`) into a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from flashsim.recipe import load_recipe
from flashsim.train import train_unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unit", default="jet")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=200_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"training.epochs={args.epochs}", f"training.max_rows={args.max_rows}", f'training.device="{args.device}"',
                     f'output="{tmp}/unit"', "efficiency.epochs=1", "training.patience=100"]
        if args.batch_size:
            overrides.append(f"training.batch_size={args.batch_size}")
        recipe = load_recipe(args.unit, overrides)
        start = time.perf_counter()
        train_unit(recipe, log=lambda msg: print(msg))
        wall = time.perf_counter() - start
        record = json.loads(open(f"{tmp}/unit/training.json").read())
    history = record["model"]["history"]
    print(f"\nunit {args.unit}: device {record['device']}, {args.threads} threads, batch {recipe.fit_config().batch_size}, "
          f"{record['rows']['train']} training rows (incl. unmatched for the efficiency model)")
    print(f"{'epoch':>5s} {'samples/s':>10s} {'data wait':>10s} {'train loss':>11s} {'val loss':>9s}")
    for i, (rate, wait, tr, va) in enumerate(zip(history["samples_per_s"], history["data_wait_s"], history["train"], history["val"]), 1):
        print(f"{i:5d} {rate:10.0f} {100 * wait:9.1f}% {tr:11.4f} {va:9.4f}")
    print(f"whole command (extraction/cache, both models, saving): {wall:.1f} s")


if __name__ == "__main__":
    main()
