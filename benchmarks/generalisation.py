"""Generalisation of the zoo's default units (issue 25): the chain trained on refsim W+jets, ttbar and DY at pileup 35,
validated on processes it never saw (the shipped cards through ``flashsim gen --reco``) and on ttbar at pileup 20 and 60,
beside ttbar at 35 as the in-distribution baseline. Every sample has its own seed, none a training (101-105) or held-out
(201-203, 301-303) sample used.

Per sample: make the paired GEN+RECO reference, run the default chain on its GEN, and validate::

    flashsim refsim --process ttbar --pileup P --seed S -n N --workers 1 -o ref.root          # or, for a card:
    flashsim gen flashsim/cards/CARD.cmnd --reco --pileup 35 --seed S -n N --jobs 1 -o ref.root
    flashsim generate --chain muon,jet,fakejet,met --input ref.root -o flash.root --keep-gen --seed 1 --jobs 1
    flashsim validate --flash flash.root --reference ref.root --collections Jet,Muon,MET --analysis A ... --out report/

and print one markdown table from the reports' metrics.json: per collection the median and worst noise-floor ratio R
(the worst target named), the classifier AUC beside the reference-halves AUC, and each analysis whose reference
selects at least ``--min-selected`` events: the selected yield flash / reference and its paired pull.

    python benchmarks/generalisation.py --events 3000 --work /tmp/generalisation --json generalisation.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CARDS = Path(__file__).resolve().parents[1] / "flashsim" / "cards"
CHAIN = "muon,jet,fakejet,met"
COLLECTIONS = ("Jet", "Muon", "MET")
ANALYSES = ("wjets_munu", "ttbar_ljets", "zmumu_jets", "vbf_hmumu")


@dataclass(frozen=True)
class Sample:
    """One validation sample: a label, what makes its reference, and its seed."""

    name: str
    seed: int
    pileup: float
    card: str | None = None  # a card in flashsim/cards/ (through gen --reco); None: refsim ttbar

    def reference_command(self, events: int, output: Path) -> list[str]:
        common = ["--pileup", f"{self.pileup:g}", "--seed", str(self.seed), "--events", str(events), "-o", str(output)]
        if self.card is None:
            return ["refsim", "--process", "ttbar", "--workers", "1", *common]
        return ["gen", str(CARDS / self.card), "--reco", "--jobs", "1", *common]


SAMPLES = (
    Sample("ttbar, pileup 35 (in distribution)", 401, 35.0),
    Sample("ttbar, pileup 20", 402, 20.0),
    Sample("ttbar, pileup 60", 403, 60.0),
    Sample("QCD multijet, pT-hat 120-170", 404, 35.0, "qcd_pthat120to170.cmnd"),
    Sample("QCD multijet, pT-hat 300-470", 405, 35.0, "qcd_pthat300to470.cmnd"),
    Sample("Z'(1 TeV) -> bb", 406, 35.0, "zprime_bb.cmnd"),
    Sample("ZZ -> 4l", 407, 35.0, "zz_4l.cmnd"),
    Sample("VBF H -> mumu", 408, 35.0, "vbf_hmumu.cmnd"),
)


def flashsim(*args: str) -> None:
    """Run one flashsim command in a fresh process; stop with its output if it fails."""
    print("$ flashsim " + " ".join(args), flush=True)
    done = subprocess.run([sys.executable, "-m", "flashsim.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"flashsim {args[0]} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def run_sample(sample: Sample, events: int, work: Path) -> dict:
    """Make the sample's reference and flash files, validate, and return the report's metrics with timings."""
    folder = work / f"s{sample.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    ref, flash, report = folder / "ref.root", folder / "flash.root", folder / "report"
    seconds = {}
    start = time.perf_counter()
    flashsim(*sample.reference_command(events, ref))
    seconds["reference"] = time.perf_counter() - start
    start = time.perf_counter()
    flashsim("generate", "--chain", CHAIN, "--input", str(ref), "-o", str(flash), "--keep-gen", "--seed", "1", "--jobs", "1")
    seconds["flash"] = time.perf_counter() - start
    start = time.perf_counter()
    analyses = [arg for name in ANALYSES for arg in ("--analysis", name)]
    flashsim("validate", "--flash", str(flash), "--reference", str(ref), "--collections", ",".join(COLLECTIONS),
             *analyses, "--out", str(report))
    seconds["validate"] = time.perf_counter() - start
    metrics = json.loads((report / "metrics.json").read_text())
    return {"sample": sample.name, "seed": sample.seed, "pileup": sample.pileup, "card": sample.card,
            "events": events, "seconds": seconds, "collections": metrics["collections"], "analyses": metrics["analyses"]}


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, fmt).replace("-", "−")


def collection_cells(record: dict, name: str) -> list[str]:
    """``median R / worst R (target)`` and ``AUC (ref halves)`` of one collection."""
    c = record["collections"].get(name)
    if c is None:
        return ["—", "—"]
    ratios = f"{_f(c.get('median_ratio'))} / {_f(c.get('max_ratio'))}" + (f" ({c['worst_variable']})" if c.get("worst_variable") else "")
    cl = c.get("classifier") or {}
    return [ratios, f"{_f(cl.get('auc'), '.3f')} ({_f(cl.get('auc_ref_halves'), '.3f')})" if cl else "—"]


def analysis_cell(record: dict, min_selected: int) -> str:
    """Each analysis the reference selects ``min_selected`` events for: name flash/ref = ratio (paired pull)."""
    cells = []
    for name, a in record["analyses"].items():
        last = a["cutflow"][-1]
        if last["events_reference"] < min_selected:
            continue
        cells.append(f"{name}: {last['events_flash']}/{last['events_reference']} = {_f(last['ratio'])} "
                     f"(pull {_f(last.get('pull_paired', last['pull']), '+.1f')})")
    return "; ".join(cells) or f"none selects {min_selected} reference events"


def table(records: list[dict], min_selected: int) -> str:
    head = ["sample (seed)"] + [f"{c} {what}" for c in COLLECTIONS for what in ("median / worst R", "AUC (ref halves)")]
    rows = ["| " + " | ".join(head + ["analyses: selected flash/ref = ratio (paired pull)"]) + " |",
            "|" + "---|" * (len(head) + 1)]
    for r in records:
        cells = [f"{r['sample']} ({r['seed']})"] + [x for c in COLLECTIONS for x in collection_cells(r, c)]
        rows.append("| " + " | ".join(cells + [analysis_cell(r, min_selected)]) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000, help="events per sample")
    ap.add_argument("--work", type=Path, default=Path("generalisation"), help="folder for the samples and reports")
    ap.add_argument("--min-selected", type=int, default=10, help="reference events an analysis must select to be shown")
    ap.add_argument("--json", type=Path, default=None, help="also write every sample's metrics and timings here")
    args = ap.parse_args()

    start = time.perf_counter()
    records = []
    for sample in SAMPLES:
        records.append(run_sample(sample, args.events, args.work))
        print(f"  {sample.name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in records[-1]["seconds"].items()), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"events": args.events, "chain": CHAIN, "records": records}, indent=1))
    print(f"\n{len(SAMPLES)} samples of {args.events:,} events in {time.perf_counter() - start:.0f} s\n")
    print(table(records, args.min_selected))


if __name__ == "__main__":
    main()
