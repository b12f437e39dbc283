"""Shared fixtures: a synthetic GEN+RECO NanoAOD sample with a known detector response, and tiny units."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from flashsim.io import write_events


def synthetic_events(n: int, seed: int = 0) -> ak.Array:
    """GEN jets and muons with a simple, known response: Jet.pt = GenJet.pt * (1 + N(0, 0.1)), 90 % efficiency."""
    rng = np.random.default_rng(seed)
    ngen = rng.integers(1, 5, n)
    total = int(ngen.sum())
    gen_pt = (rng.pareto(3, total) + 1) * 20
    gen_eta = rng.uniform(-2.5, 2.5, total)
    gen_phi = rng.uniform(-np.pi, np.pi, total)
    flav = rng.choice([0, 4, 5], total, p=[0.8, 0.1, 0.1]).astype(np.uint8)
    npu = rng.poisson(35, n).astype(np.int32)
    reco = rng.random(total) < 0.9
    reco_pt = gen_pt * (1 + rng.normal(0, 0.1, total))
    event_of = np.repeat(np.arange(n), ngen)
    local = np.concatenate([np.arange(k) for k in ngen])
    jet_counts = np.bincount(event_of[reco], minlength=n)
    gen = ak.zip({
        "pt": ak.unflatten(gen_pt.astype(np.float32), ngen),
        "eta": ak.unflatten(gen_eta.astype(np.float32), ngen),
        "phi": ak.unflatten(gen_phi.astype(np.float32), ngen),
        "mass": ak.unflatten(np.full(total, 5, np.float32), ngen),
        "hadronFlavour": ak.unflatten(flav, ngen),
        "partonFlavour": ak.unflatten(flav.astype(np.int32), ngen),
    })
    jets = ak.zip({
        "pt": ak.unflatten(reco_pt[reco].astype(np.float32), jet_counts),
        "eta": ak.unflatten((gen_eta + rng.normal(0, 0.02, total))[reco].astype(np.float32), jet_counts),
        "phi": ak.unflatten(gen_phi[reco].astype(np.float32), jet_counts),
        "mass": ak.unflatten(np.full(int(reco.sum()), 5.5, np.float32), jet_counts),
        "genJetIdx": ak.unflatten(local[reco].astype(np.int32), jet_counts),
        "hadronFlavour": ak.unflatten(flav[reco].astype(np.int32), jet_counts),
    })
    nfake = rng.poisson(npu / 25.0)
    fake_total = int(nfake.sum())
    fakes = ak.zip({
        "pt": ak.unflatten((15 + rng.exponential(6, fake_total)).astype(np.float32), nfake),
        "eta": ak.unflatten(rng.uniform(-4, 4, fake_total).astype(np.float32), nfake),
        "phi": ak.unflatten(rng.uniform(-np.pi, np.pi, fake_total).astype(np.float32), nfake),
        "mass": ak.unflatten(rng.uniform(2, 6, fake_total).astype(np.float32), nfake),
        "genJetIdx": ak.unflatten(np.full(fake_total, -1, np.int32), nfake),
        "hadronFlavour": ak.unflatten(np.zeros(fake_total, np.int32), nfake),
    })
    jets = ak.concatenate([jets, fakes], axis=1)
    jets = jets[ak.argsort(jets.pt, axis=1, ascending=False)]
    genmet_pt = rng.exponential(20, n)
    matched = jets[jets.genJetIdx >= 0]
    dx = ak.to_numpy(ak.sum(matched.pt * np.cos(matched.phi), axis=1)) - ak.to_numpy(ak.sum(gen.pt[matched.genJetIdx] * np.cos(matched.phi), axis=1))
    met_pt = np.abs(genmet_pt + rng.normal(0, 5 + 0.05 * npu, n) - 0.5 * dx)
    gp = ak.zip({
        "pt": ak.unflatten(np.full(n, 30, np.float32), np.ones(n, np.int64)),
        "eta": ak.unflatten(np.zeros(n, np.float32), np.ones(n, np.int64)),
        "phi": ak.unflatten(np.zeros(n, np.float32), np.ones(n, np.int64)),
        "mass": ak.unflatten(np.full(n, 0.105, np.float32), np.ones(n, np.int64)),
        "pdgId": ak.unflatten(np.full(n, 13, np.int32), np.ones(n, np.int64)),
        "status": ak.unflatten(np.ones(n, np.int32), np.ones(n, np.int64)),
        "statusFlags": ak.unflatten(np.ones(n, np.int32), np.ones(n, np.int64)),
        "genPartIdxMother": ak.unflatten(np.full(n, -1, np.int32), np.ones(n, np.int64)),
    })
    return ak.zip({
        "run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32), "event": np.arange(n, dtype=np.uint64),
        "GenJet": gen, "GenPart": gp, "Jet": jets,
        "GenMET": ak.zip({"pt": genmet_pt.astype(np.float32), "phi": np.zeros(n, np.float32)}, depth_limit=1),
        "MET": ak.zip({"pt": met_pt.astype(np.float32), "phi": np.zeros(n, np.float32)}, depth_limit=1),
        "Pileup": ak.zip({"nTrueInt": npu.astype(np.float32), "nPU": npu}, depth_limit=1),
    }, depth_limit=1)


JET_UNIT = """
name = "tinyjet"
format_version = 1
type = "object"
output = "Jet"
gen_index = "genJetIdx"
carry = { hadronFlavour = "hadronFlavour" }
source = { collection = "GenJet", selection = "pt > 10" }
output_selection = "pt > 12"
context = [
  { field = "pt", steps = [{ type = "log" }, { type = "standardize" }] },
  { field = "eta" },
  { field = "hadronFlavour" },
  { event = "Pileup.nTrueInt" },
]
targets = [
  { column = "pt", steps = [{ type = "log_ratio", reference = "pt" }, { type = "standardize" }] },
  { column = "eta", steps = [{ type = "difference", reference = "eta" }, { type = "standardize" }] },
  { column = "phi", steps = [{ type = "phi_difference", reference = "phi" }] },
  { column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },
]
model = { type = "coupling_rqs", layers = 2, hidden = 16, blocks = 1, bins = 4 }
efficiency = { hidden = 16, layers = 2 }
"""

MET_UNIT = """
name = "tinymet"
format_version = 1
type = "event"
output = "MET"
context = [
  { event = "GenMET.pt" },
  { event = "Pileup.nTrueInt" },
  { feature = "reco_minus_gen", collection = "Jet", gen_collection = "GenJet", index = "genJetIdx", fields = ["px", "py"], name = "jet_mismeasure" },
]
targets = [
  { column = "pt", steps = [{ type = "clamp" }, { type = "log" }, { type = "standardize" }] },
  { column = "phi", steps = [{ type = "phi_difference", reference = "GenMET.phi" }] },
]
model = { type = "mean_quantile", hidden = 16, layers = 2 }
"""


def nanoevents(path: Path):
    """A NanoAOD file as coffea reads it (NanoAODSchema, eager), its schema warnings silenced."""
    import warnings

    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()


def write_unit(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "unit.toml").write_text(text)
    return directory


def write_recipe(path: Path, unit_dir: Path, inputs: str, epochs: int = 3, extra: str = "") -> Path:
    path.write_text(f"""
unit = "{unit_dir}"
[data]
inputs = ["{inputs}"]
[training]
epochs = {epochs}
batch_size = 512
seed = 3
device = "cpu"
[efficiency]
epochs = 2
{extra}
""")
    return path


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "synthetic.root"
    write_events(synthetic_events(3000, seed=11), path)
    return path


@pytest.fixture(scope="session")
def trained_units(tmp_path_factory: pytest.TempPathFactory, synthetic_file: Path) -> dict[str, Path]:
    """A tiny jet unit and a MET unit conditioned on the jets' mismeasurement, trained for a few epochs."""
    from flashsim.recipe import load_recipe
    from flashsim.train import train_unit

    root = tmp_path_factory.mktemp("units")
    out = {}
    for name, text in (("tinyjet", JET_UNIT), ("tinymet", MET_UNIT), ("tinyfake", FAKE_UNIT)):
        unit_dir = write_unit(root / name, text)
        recipe = write_recipe(root / f"{name}.toml", unit_dir, str(synthetic_file))
        train_unit(load_recipe(recipe), log=lambda _msg: None)
        out[name] = unit_dir
    return out


FAKE_UNIT = """
name = "tinyfake"
format_version = 1
type = "multiplicity"
output = "Jet"
merge = true
context = [ { event = "Pileup.nTrueInt" } ]
targets = [
  { column = "pt", steps = [{ type = "log" }, { type = "standardize" }] },
  { column = "eta", steps = [{ type = "standardize" }] },
  { column = "phi", steps = [{ type = "phi_difference", reference = "prev_phi" }, { type = "standardize" }] },
  { column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },
]
model = { type = "coupling_rqs", layers = 2, hidden = 16, blocks = 1, bins = 4 }
constants = { genJetIdx = -1, hadronFlavour = 0 }
multiplicity = { max_objects = 4, selection = "genJetIdx < 0", previous = ["pt", "phi"] }
"""
