"""Every NanoAOD version end to end: refsim in that version's schema -> `dataset` rows for every zoo unit of the
default and Run-3 chains -> a short training -> `generate --keep-gen` with the zoo's Run-2 chain (v7, v9) or Run-3
chain (v12, v15) -> uproot, coffea (Jet.matched_gen, Electron, Photon, PuppiMET) and ROOT.

Prints one markdown table (unit x version: training rows with a reco target, or why none) and the readers'
verdicts per version.

    python benchmarks/version_matrix.py [--events 1000] [--workdir /tmp/flashsim-versions]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from flashsim.chain import Chain
from flashsim.datasets import extract
from flashsim.errors import FlashsimError
from flashsim.io import open_source
from flashsim.io.schema import VERSIONS, nano_version
from flashsim.locations import DEFAULT_CHAIN, RUN3_CHAIN
from flashsim.recipe import load_recipe
from flashsim.train import train_unit
from flashsim.unit import load_unit

SHORT_RECIPE = """unit = "{unit}"
output = "{output}"
[data]
inputs = ["{input}"]
[training]
epochs = 2
batch_size = 256
device = "cpu"
[efficiency]
epochs = 2
batch_size = 256
"""


def refsim(version: str, events: int, path: Path) -> None:
    subprocess.run([sys.executable, "-m", "flashsim.cli", "refsim", "--process", "ttbar", "--events", str(events), "--seed", "7",
                    "--pileup", "35", "--nano-version", version, "-o", str(path)], check=True, capture_output=True)


def rows_and_training(unit_name: str, source: Path, workdir: Path) -> str:
    """Rows extracted for the unit and whether a 2-epoch training on them finishes, or the refusal."""
    try:
        rows = extract(load_unit(unit_name), source).report.matched
    except FlashsimError as exc:
        return f"no: {str(exc).split(': ', 1)[-1].split(', which')[0]}"
    recipe_path = workdir / f"{unit_name}.toml"
    recipe_path.write_text(SHORT_RECIPE.format(unit=unit_name, output=workdir / unit_name, input=source))
    try:
        train_unit(load_recipe(recipe_path), log=lambda _: None)
    except FlashsimError as exc:
        return f"{rows:,} rows; training FAILS: {exc}"
    return f"{rows:,} rows, trains"


def readers(source: Path, output: Path, chain: tuple[str, ...]) -> str:
    """Generate with a zoo chain, keeping GEN, and check the output in uproot, coffea and ROOT."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    import ROOT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Chain(chain).generate(source, output, keep_gen=True)
        nano = NanoEventsFactory.from_root({str(output): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = int(ak.sum(~ak.is_none(nano.Jet.matched_gen.pt, axis=1)))
        coffea_counts = [int(ak.sum(ak.num(nano[c]))) for c in ("Electron", "Photon")]
        puppi = float(ak.sum(nano.PuppiMET.pt))
    tree = uproot.open(output)["Events"]
    columns = tree.arrays(["Jet_pt", "Jet_genJetIdx", "nElectron", "nPhoton", "PuppiMET_pt"])
    uproot_ok = (int(ak.sum(columns.Jet_genJetIdx >= 0)) == matched
                 and coffea_counts == [int(ak.sum(columns.nElectron)), int(ak.sum(columns.nPhoton))]
                 and np.isclose(puppi, float(ak.sum(columns.PuppiMET_pt)), rtol=1e-6))
    frame = ROOT.RDataFrame("Events", str(output))
    sums = frame.Define("s", "Sum(Jet_pt)").Sum("s"), frame.Sum("nElectron"), frame.Sum("PuppiMET_pt")
    expected = (float(ak.sum(ak.values_astype(columns.Jet_pt, np.float64))), float(ak.sum(columns.nElectron)),
                float(ak.sum(ak.values_astype(columns.PuppiMET_pt, np.float64))))
    root_ok = np.allclose([s.GetValue() for s in sums], expected, rtol=1e-6)
    return (f"uproot {'ok' if uproot_ok else 'MISMATCH'}, coffea: matched_gen {matched:,} jets, {coffea_counts[0]:,} electrons, "
            f"{coffea_counts[1]:,} photons; RDataFrame {'ok' if root_ok else 'MISMATCH'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/flashsim-versions"))
    args = parser.parse_args()
    units = list(dict.fromkeys(DEFAULT_CHAIN + RUN3_CHAIN))
    cells: dict[str, list[str]] = {unit: [] for unit in units}
    verdicts = []
    for version in VERSIONS:
        workdir = args.workdir / version
        workdir.mkdir(parents=True, exist_ok=True)
        source = workdir / "refsim_ttbar.root"
        started = time.perf_counter()
        refsim(version, args.events, source)
        for unit in units:
            cells[unit].append(rows_and_training(unit, source, workdir))
        chain = RUN3_CHAIN if nano_version(version).run == 3 else DEFAULT_CHAIN
        verdicts.append(f"- {version} (detected {open_source(source).version}), "
                        f"{'Run-3' if chain == RUN3_CHAIN else 'default'} chain: {readers(source, workdir / 'flash.root', chain)}"
                        f" ({time.perf_counter() - started:.0f} s)")
        print(verdicts[-1], flush=True)
    print(f"\n| unit | {' | '.join(VERSIONS)} |")
    print("|---" * (len(VERSIONS) + 1) + "|")
    for unit in units:
        print(f"| {unit} | {' | '.join(cells[unit])} |")
    print("\n" + "\n".join(verdicts))

if __name__ == "__main__":
    main()
