"""Write the README's table of the default units' figures from a bench_units.py run, so the figures in the
README are the benchmark's own and never edited by hand.

    python benchmarks/bench_units.py --input data/refsim/test_wjets.root data/refsim/test_ttbar.root \\
        --ablation met_genonly --seeds 11,12,13 --json bench_units.json
    python benchmarks/readme_tables.py bench_units.json            # rewrites README.md between its markers

The table goes between ``<!-- bench_units:begin -->`` and ``<!-- bench_units:end -->``; everything else
in the README is left as it is. Each cell is the range (min–max) over the run's generation seeds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

BEGIN, END = "<!-- bench_units:begin -->", "<!-- bench_units:end -->"


def span(per_seed: Mapping[str, Mapping[str, float]], key: str, fmt: str = ".2f", signed: bool = False) -> str:
    """``min–max`` of one headline figure over the seeds (one value when they agree to the format)."""
    values = [seed[key] for seed in per_seed.values() if key in seed]
    if not values:
        return "—"
    spec = ("+" if signed else "") + fmt
    low, high = format(min(values), spec), format(max(values), spec)
    return (low if low == high else f"{low}–{high}").replace("-", "−")


def table(record: Mapping) -> str:
    """The markdown table (and the line saying what run it comes from)."""
    s = record["per_seed"]
    rows = [
        "| unit | median R | worst R | classifier AUC (ref halves 0.50) | notes |",
        "|---|---|---|---|---|",
        f"| muon | {span(s, 'Muon median R')} | {span(s, 'Muon max R')} | {span(s, 'Muon AUC', '.3f')} | efficiency per bin within "
        f"{span(s, 'Muon eff vs pt', '.3f')} (vs pT) and {span(s, 'Muon eff vs eta', '.3f')} (vs η), at most "
        f"{span(s, 'Muon eff vs pt sig', '.1f')}σ and {span(s, 'Muon eff vs eta sig', '.1f')}σ |",
        f"| jet | {span(s, 'Jet median R')} | {span(s, 'Jet max R')} | {span(s, 'Jet AUC', '.3f')} | response within "
        f"{span(s, 'Jet response %', '.1f')} % and resolution within {span(s, 'Jet resolution %', '.1f')} % "
        f"per gen-pT bin (worst excess over 10 %: {span(s, 'Jet res excess sig', '.1f', True)}σ); btagDeepFlavB ROC AUC per "
        f"flavour pair within {span(s, 'btagB ROC dAUC', '.3f')} |",
        f"| fakejet | — | leading pair ΔpT {span(s, 'fake pair dpt R')}, Δφ {span(s, 'fake pair dphi R')} | — | jets per event per "
        f"pileup bin: χ²/ndf {span(s, 'jets/event chi2/ndf')} |",
        f"| met | {span(s, 'MET median R')} | {span(s, 'MET max R')} | {span(s, 'MET AUC', '.3f')} | x/y resolution vs sumEt: worst bin "
        f"{span(s, 'MET res worst %', '.1f')} % (excess over 5 %: {span(s, 'MET res excess sig', '.1f', True)}σ); "
        f"corr((MET − GenMET)ₓ, jets' Σ(reco − gen)ₓ): refsim {span(s, 'MET corr ref', '.3f', True)}, flash "
        f"{span(s, 'MET corr flash', '.3f', True)}, GEN-only ablation {span(s, 'MET corr GEN-only', '.3f', True)} |",
    ]
    speed = record.get("speed") or {}
    note = (f"Written by `benchmarks/readme_tables.py` from a `bench_units.py` run on {record['events']:,} held-out events, "
            f"generation seeds {', '.join(str(x) for x in record['seeds'])}.")
    if speed:
        note += (f" Speed in the same run: the chain simulated {speed['chain events/s']:,.0f} events/s in memory on "
                 f"{speed['threads']} CPU threads, {speed['chain events/s'] / speed['refsim detector events/s']:.0f}× the refsim "
                 f"detector stage ({speed['refsim detector events/s']:,.0f} events/s, Pythia excluded).")
    return "\n".join(rows) + "\n\n" + note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", type=Path, help="the JSON written by bench_units.py --json")
    parser.add_argument("--readme", type=Path, default=Path(__file__).resolve().parent.parent / "README.md")
    args = parser.parse_args()
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.readme}: no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{BEGIN}\n{table(json.loads(args.figures.read_text()))}\n{END}{tail}")
    print(f"wrote the table of {args.figures} into {args.readme}")


if __name__ == "__main__":
    main()
