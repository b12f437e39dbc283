"""The W+jet analysis-specific event units (Chen et al. 2021): selection, feature extraction,
output mapping, chain run, the inverse-epoch schedule and a tiny regressor that learns."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from flashsim.chain import Chain
from flashsim.datasets import extract
from flashsim.errors import InputError, UnitError
from flashsim.event_outputs import build_collections
from flashsim.io import read_events, write_events
from flashsim.models import build_model
from flashsim.recipe import FitConfig, load_recipe
from flashsim.train import fit_model, train_unit
from flashsim.unit import UnitSpec, load_unit
from flashsim.locations import zoo_dir

MU_RES, JET_RES, MET_RES = 0.02, 0.10, 10.0  # the synthetic detector's resolutions


def _polar(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / pt), np.arctan2(py, px)


def wjet_events(n: int, seed: int = 0) -> ak.Array:
    """Synthetic W(->mu nu)+jets GEN+RECO events with a known detector response.

    GenPart: a prompt muon (sometimes outside the acceptance or soft) and a pion; GenJet: a jet
    on top of the muon (gen jets contain it), 0-2 more jets; reco muon/jets smeared around the
    gen ones (``MU_RES``, ``JET_RES``), 95 % efficient, 3 % of muons mismeasured by a factor 2
    (rejected by the 10 % training cut); MET = GenMET + N(0, ``MET_RES``) in x and y.
    """
    rng = np.random.default_rng(seed)
    mu_pt = 15 + rng.exponential(30, n)
    mu_eta = rng.uniform(-2.5, 2.5, n)
    mu_phi = rng.uniform(-np.pi, np.pi, n)
    charge = rng.choice([-1, 1], n)
    # GenPart: [pion, muon]
    two = np.full(n, 2)
    gp = ak.zip({
        "pt": ak.unflatten(np.stack([rng.uniform(1, 5, n), mu_pt], 1).ravel().astype(np.float32), two),
        "eta": ak.unflatten(np.stack([rng.uniform(-2, 2, n), mu_eta], 1).ravel().astype(np.float32), two),
        "phi": ak.unflatten(np.stack([rng.uniform(-3, 3, n), mu_phi], 1).ravel().astype(np.float32), two),
        "mass": ak.unflatten(np.tile([0.1396, 0.1057], n).astype(np.float32), two),
        "pdgId": ak.unflatten(np.stack([np.full(n, 211), -13 * charge], 1).ravel().astype(np.int32), two),
        "status": ak.unflatten(np.ones(2 * n, np.int32), two),
        "statusFlags": ak.unflatten(np.ones(2 * n, np.int32), two),
        "genPartIdxMother": ak.unflatten(np.full(2 * n, -1, np.int32), two),
    })
    # GenJet: the muon's own jet, then 0-2 hadronic jets
    n_had = rng.choice([0, 1, 2], n, p=[0.1, 0.75, 0.15])
    counts = 1 + n_had
    total = int(counts.sum())
    first = np.r_[0, np.cumsum(counts)[:-1]]
    is_mu_jet = np.zeros(total, bool)
    is_mu_jet[first] = True
    owner = np.repeat(np.arange(n), counts)
    jpt = np.where(is_mu_jet, mu_pt[owner] * 1.01, 25 + rng.exponential(40, total))
    jeta = np.where(is_mu_jet, mu_eta[owner] + 0.01, rng.uniform(-2.8, 2.8, total))
    jphi = np.where(is_mu_jet, mu_phi[owner], rng.uniform(-np.pi, np.pi, total))
    jmass = np.where(is_mu_jet, 0.5, rng.uniform(3, 20, total))
    genjet = ak.zip({k: ak.unflatten(v.astype(np.float32), counts) for k, v in
                     {"pt": jpt, "eta": jeta, "phi": jphi, "mass": jmass}.items()}
                    | {"hadronFlavour": ak.unflatten(np.zeros(total, np.uint8), counts),
                       "partonFlavour": ak.unflatten(np.zeros(total, np.int32), counts)})
    # reco muon: smeared momentum, 95 % efficient, 3 % mismeasured
    mu_reco = rng.random(n) < 0.95
    scale = (1 + rng.normal(0, MU_RES, n)) * np.where(rng.random(n) < 0.03, 0.5, 1.0)
    rpt = mu_pt * scale
    rmu = ak.zip({
        "pt": ak.unflatten(rpt[mu_reco].astype(np.float32), mu_reco.astype(int)),
        "eta": ak.unflatten(mu_eta[mu_reco].astype(np.float32), mu_reco.astype(int)),
        "phi": ak.unflatten(mu_phi[mu_reco].astype(np.float32), mu_reco.astype(int)),
        "mass": ak.unflatten(np.full(int(mu_reco.sum()), 0.1057, np.float32), mu_reco.astype(int)),
        "charge": ak.unflatten(charge[mu_reco].astype(np.int32), mu_reco.astype(int)),
        "genPartIdx": ak.unflatten(np.ones(int(mu_reco.sum()), np.int32), mu_reco.astype(int)),
    })
    # reco jets: smeared, 95 % efficient, pointing to their gen jet
    j_reco = rng.random(total) < 0.95
    local = np.arange(total) - first[owner]
    jet_counts = np.bincount(owner[j_reco], minlength=n)
    rj = {"pt": jpt * (1 + rng.normal(0, JET_RES, total)), "eta": jeta + rng.normal(0, 0.02, total),
          "phi": jphi + rng.normal(0, 0.02, total), "mass": jmass * (1 + rng.normal(0, JET_RES, total))}
    jets = ak.zip({k: ak.unflatten(v[j_reco].astype(np.float32), jet_counts) for k, v in rj.items()}
                  | {"genJetIdx": ak.unflatten(local[j_reco].astype(np.int32), jet_counts)})
    jets = jets[ak.argsort(jets.pt, axis=1, ascending=False)]
    met_pt, met_phi = rng.exponential(30, n), rng.uniform(-np.pi, np.pi, n)
    mx = met_pt * np.cos(met_phi) + rng.normal(0, MET_RES, n)
    my = met_pt * np.sin(met_phi) + rng.normal(0, MET_RES, n)
    return ak.zip({
        "run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32), "event": np.arange(n, dtype=np.uint64),
        "GenPart": gp, "GenJet": genjet, "Muon": rmu, "Jet": jets,
        "GenMET": ak.zip({"pt": met_pt.astype(np.float32), "phi": met_phi.astype(np.float32)}, depth_limit=1),
        "MET": ak.zip({"pt": np.hypot(mx, my).astype(np.float32), "phi": np.arctan2(my, mx).astype(np.float32)}, depth_limit=1),
        "Pileup": ak.zip({"nTrueInt": np.full(n, 35.0, np.float32)}, depth_limit=1),
    }, depth_limit=1)


def _expected_selection(events: ak.Array) -> np.ndarray:
    """The paper's selection written out event by event, independently of the feature code."""
    keep = np.zeros(len(events), bool)
    for i, ev in enumerate(ak.to_list(events[["GenPart", "GenJet"]])):
        mus = [p for p in _records(ev["GenPart"]) if abs(p["pdgId"]) == 13 and p["status"] == 1 and abs(p["eta"]) < 2.4]
        if not mus:
            continue
        mu = max(mus, key=lambda p: p["pt"])
        jets = [j for j in _records(ev["GenJet"]) if j["pt"] > 30 and abs(j["eta"]) < 2.4 and _dr(j, mu) >= 0.5]
        keep[i] = mu["pt"] > 22 and len(jets) == 1 and _dr(jets[0], mu) > 0.5
    return keep


def _records(coll) -> list[dict]:
    return coll if isinstance(coll, list) else [dict(zip(coll, v)) for v in zip(*coll.values())]


def _dr(a: dict, b: dict) -> float:
    dphi = (a["phi"] - b["phi"] + np.pi) % (2 * np.pi) - np.pi
    return float(np.hypot(a["eta"] - b["eta"], dphi))


@pytest.fixture(scope="module")
def wjet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_events(wjet_events(2500, seed=5), tmp_path_factory.mktemp("wjet") / "wjet.root")


TINY = {"hidden": 32, "layers": 2}


@pytest.fixture(scope="module")
def trained_regressor(tmp_path_factory: pytest.TempPathFactory, wjet_file: Path) -> Path:
    """The zoo's wjet_regressor spec with a small MLP trained on synthetic events with Adam; 2 members.

    (A constant learning rate: the paper's lr / (1 + epoch) assumes ~9k steps per epoch; on a
    few hundred rows it stops learning after a handful of steps.)"""
    root = tmp_path_factory.mktemp("wjet_units")
    unit_dir = root / "wjet_regressor"
    unit_dir.mkdir()
    shutil.copyfile(zoo_dir() / "wjet_regressor" / "unit.toml", unit_dir / "unit.toml")
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
unit = "{unit_dir}"
ensemble = 2
[data]
inputs = ["{wjet_file}"]
dataset = "{root / 'wjet.parquet'}"
[split]
test = 0.2
validation = 0.3
[model]
hidden = {TINY["hidden"]}
layers = {TINY["layers"]}
[optimizer]
type = "adam"
lr = 3e-3
weight_decay = 0.0
[schedule]
type = "constant"
[training]
epochs = 30
batch_size = 32
patience = 100
seed = 1
device = "cpu"
num_threads = 1
""")
    train_unit(load_recipe(recipe), log=lambda _m: None)
    return unit_dir


# ---- selection and extraction ------------------------------------------------------------------


def test_selection_and_feature_extraction(tmp_path: Path) -> None:
    events = wjet_events(400, seed=1)
    path = write_events(events, tmp_path / "w.root")
    unit = load_unit("wjet_regressor", require_trained=False)
    expected = _expected_selection(events)
    assert 0.25 < expected.mean() < 0.9, "the synthetic sample exercises both outcomes of the selection"
    np.testing.assert_array_equal(unit.event_mask(events), expected)

    table = extract(unit, path, hash_sources=False)
    c = table.columns
    np.testing.assert_array_equal(c["event_id"], np.flatnonzero(expected))
    ev = events[expected]
    gen_mu = ak.firsts(ev.GenPart[abs(ev.GenPart.pdgId) == 13])
    np.testing.assert_allclose(c["ctx.mu_px"], ak.to_numpy(gen_mu.pt * np.cos(gen_mu.phi)), rtol=1e-5)
    np.testing.assert_allclose(c["ctx.met_py"], ak.to_numpy(ev.GenMET.pt * np.sin(ev.GenMET.phi)), rtol=1e-5)
    assert np.all(np.hypot(c["ctx.mu_px"], c["ctx.mu_py"]) > 22)
    # the jet is the hadronic one (pt > 30, |eta| < 2.4, away from the muon), never the muon's own gen jet
    jet_pt, jet_eta = np.hypot(c["ctx.jet_px"], c["ctx.jet_py"]), np.arcsinh(c["ctx.jet_pz"] / np.hypot(c["ctx.jet_px"], c["ctx.jet_py"]))
    assert np.all(jet_pt > 30) and np.all(np.abs(jet_eta) < 2.4)
    assert np.all(c["ctx.jet_mass"] >= 3), "the muon's own gen jet (mass 0.5) is cleaned away"
    # reco targets: the reco muon matched through genPartIdx, the reco jet through genJetIdx
    labelled = c["reconstructed"]
    rmu = ak.firsts(ev.Muon)
    has_mu = ~ak.to_numpy(ak.is_none(rmu))
    np.testing.assert_allclose(c["tgt.mu_px"][has_mu], ak.to_numpy(rmu.pt * np.cos(rmu.phi))[has_mu], rtol=1e-5)
    assert np.all(np.isnan(c["tgt.mu_px"][~has_mu])) and not labelled[~has_mu].any(), "no reco muon: no training target"
    ratio = np.hypot(c["tgt.mu_px"], c["tgt.mu_py"]) / np.hypot(c["ctx.mu_px"], c["ctx.mu_py"])
    assert not labelled[has_mu & (np.abs(ratio - 1) > 0.1)].any(), "mismeasured muons are dropped from training"
    assert (has_mu & (np.abs(ratio - 1) > 0.1)).any(), "the sample has mismeasured muons to drop"
    ok = labelled
    gen_jet_pt = np.hypot(c["ctx.jet_px"], c["ctx.jet_py"])[ok]
    reco_jet_pt = np.hypot(c["tgt.jet_px"], c["tgt.jet_py"])[ok]
    assert 0.05 < np.std(reco_jet_pt / gen_jet_pt - 1) < 0.15, "the matched reco jet carries the 10 % jet resolution"
    assert table.report.matched == int(labelled.sum()) and table.report.events == 400


def test_spec_errors_are_clear(tmp_path: Path) -> None:
    text = (zoo_dir() / "wjet_regressor" / "unit.toml").read_text()
    with pytest.raises(UnitError, match=r"outputs read \['mu_pxx'\]"):
        UnitSpec.from_dict(tomllib.loads(text.replace('px = "mu_px"', 'px = "mu_pxx"')))
    with pytest.raises(UnitError, match=r"targets \['met_py'\] are not produced by target_features"):
        UnitSpec.from_dict(tomllib.loads(text.replace('{ event = "MET.py", name = "met_py" },', "")))
    unit_dir = tmp_path / "u"
    unit_dir.mkdir()
    (unit_dir / "unit.toml").write_text(text.replace("(mu_pt > 22)", "(mu_ptt > 22)"))
    with pytest.raises(InputError, match=r"field 'mu_ptt'"):
        load_unit(unit_dir, require_trained=False).event_mask(wjet_events(20))


# ---- output mapping and the chain --------------------------------------------------------------


def test_output_mapping_builds_nanoaod_collections() -> None:
    entries = UnitSpec.load(zoo_dir() / "wjet_regressor" / "unit.toml").outputs
    rng = np.random.default_rng(0)
    cols = {k: rng.normal(0, 40, 50) for k in ("mu_px", "mu_py", "mu_pz", "jet_px", "jet_py", "jet_pz", "met_px", "met_py")}
    cols |= {"jet_mass": rng.uniform(5, 20, 50), "mu_index": np.arange(50), "mu_pdgId": np.full(50, 13), "jet_index": np.zeros(50)}
    out = build_collections(entries, cols, 50)
    assert set(out) == {"Muon", "Jet", "MET"}
    assert ak.all(ak.num(out["Muon"]) == 1) and ak.all(ak.num(out["Jet"]) == 1) and out["MET"].ndim == 1
    mu = ak.firsts(out["Muon"])
    pt, eta, phi = _polar(cols["mu_px"], cols["mu_py"], cols["mu_pz"])
    np.testing.assert_allclose(ak.to_numpy(mu.pt), pt, rtol=1e-5)
    np.testing.assert_allclose(ak.to_numpy(mu.eta), eta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ak.to_numpy(mu.phi), phi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(ak.firsts(out["Jet"]).mass), cols["jet_mass"], rtol=1e-5)
    np.testing.assert_allclose(ak.to_numpy(out["MET"].pt), np.hypot(cols["met_px"], cols["met_py"]), rtol=1e-5)
    assert set(out["MET"].fields) == {"pt", "phi"}
    assert str(out["Muon"].genPartIdx.type.content.content) == "int32" and str(out["Muon"].pt.type.content.content) == "float32"


def test_unit_runs_in_a_chain_writing_one_entry_collections(trained_regressor: Path, wjet_file: Path, tmp_path: Path) -> None:
    chain = Chain([trained_regressor])
    assert chain.outputs == ["Muon", "Jet", "MET"]
    out = tmp_path / "flash.root"
    written = chain.generate(wjet_file, out, seed=3, keep_gen=True, step_size=1000)
    gen = read_events(wjet_file)
    selected = load_unit(trained_regressor).event_mask(gen)
    assert written == int(selected.sum()), "events failing the selection are dropped from the output"
    tree = uproot.open(out)["Events"]
    types = {k: str(tree[k].interpretation) for k in tree.keys()}
    for name in ("nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_genPartIdx", "Muon_pdgId",
                 "nJet", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_genJetIdx", "MET_pt", "MET_phi"):
        assert name in types, name
    assert "float32" in types["Muon_pt"] or ">f4" in types["Muon_pt"]
    assert ">i4" in types["Muon_genPartIdx"] and ">i4" in types["nMuon"]
    flash = read_events(out)
    assert ak.all(ak.num(flash.Muon) == 1) and ak.all(ak.num(flash.Jet) == 1)
    np.testing.assert_array_equal(ak.to_numpy(flash.event), np.flatnonzero(selected))
    # event-level consistency: the muon points at the gen muon it was drawn from, the jet at its gen jet
    mu, jet = flash.Muon[:, 0], flash.Jet[:, 0]
    gen_mu = flash.GenPart[ak.singletons(mu.genPartIdx)][:, 0]
    assert ak.all(abs(gen_mu.pdgId) == 13) and ak.all(mu.pdgId == gen_mu.pdgId)
    gen_jet = flash.GenJet[ak.singletons(jet.genJetIdx)][:, 0]
    assert ak.all(gen_jet.pt > 30)
    assert float(np.median(np.abs(ak.to_numpy(mu.pt / gen_mu.pt) - 1))) < 0.25
    assert np.all(np.abs(ak.to_numpy(mu.phi)) <= np.pi) and ak.all(flash.MET.pt >= 0)
    assert ak.all(np.abs(mu.mass - 0.1056584) < 1e-6)


def test_ensemble_members_are_trained_with_their_own_seeds(trained_regressor: Path) -> None:
    member = trained_regressor / "member_1"
    assert (member / "model.safetensors").is_file() and (member / "unit.toml").is_file()
    seeds = [json.loads((d / "training.json").read_text())["recipe_content"]["training"]["seed"] for d in (trained_regressor, member)]
    assert seeds == [1, 2]
    events = wjet_events(300, seed=9)
    a = load_unit(trained_regressor).run(events, seed=1)
    b = load_unit(member).run(events, seed=1)
    assert len(a) == len(b) and not np.allclose(ak.to_numpy(a.MET.pt), ak.to_numpy(b.MET.pt))


# ---- training ------------------------------------------------------------------------------------


def test_inverse_epoch_schedule_with_adam() -> None:
    torch.manual_seed(0)
    model = build_model({"type": "mean_quantile", "hidden": 8, "layers": 1}, 2, 2)
    x = torch.randn(300, 2)
    y = x + 0.1 * torch.randn(300, 2)
    cfg = FitConfig(epochs=4, batch_size=100, lr=1e-3, weight_decay=0.0, patience=100, optimizer="adam", schedule="inverse_epoch")
    seen: list[tuple[type, float]] = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append((type(self), self.param_groups[0]["lr"]))
        return original(self, *args, **kwargs)

    torch.optim.Adam.step = spy
    try:
        result = fit_model(model, lambda epoch: (y, x), (y, x), cfg, torch.device("cpu"))
    finally:
        torch.optim.Adam.step = original
    np.testing.assert_allclose(result["history"]["lr"], [1e-3 / (1 + e) for e in range(4)])
    assert all(kind is torch.optim.Adam for kind, _ in seen), "plain Adam, not AdamW"
    np.testing.assert_allclose([lr for _, lr in seen], np.repeat([1e-3 / (1 + e) for e in range(4)], 3)), "constant within an epoch"


def test_recipe_reads_paper_options() -> None:
    recipe = load_recipe("wjet_regressor")
    cfg = recipe.fit_config()
    assert (cfg.optimizer, cfg.schedule, cfg.batch_size, cfg.lr) == ("adam", "inverse_epoch", 128, 1e-3)
    assert recipe.ensemble >= 1 and recipe.split.test == 0.2 and recipe.split.validation == 0.3
    with pytest.raises(InputError, match=r"schedule\.type: unknown schedule 'cosine'"):
        load_recipe("wjet_regressor", ["schedule.type='cosine'"])
    with pytest.raises(InputError, match=r"optimizer\.type: unknown optimizer 'sgd'"):
        load_recipe("wjet_regressor", ["optimizer.type='sgd'"])


def test_paper_architecture() -> None:
    spec = UnitSpec.load(zoo_dir() / "wjet_regressor" / "unit.toml")
    model = build_model(spec.model, 9, 9)
    linears = [m for m in model.mean_net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(9, 9), (9, 100), (100, 100), (100, 100), (100, 100), (100, 9)]
    acts = [m for m in model.mean_net if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 5 and all(a.negative_slope == 0.05 for a in acts)


def test_tiny_regressor_moves_towards_the_truth(trained_regressor: Path) -> None:
    """Trained a few epochs on synthetic events, the regressor's mean follows the (unbiased) truth
    and its sigma the known MET resolution, much closer than the same network untrained."""
    unit = load_unit(trained_regressor)
    events = wjet_events(1500, seed=21)
    events = events[unit.event_mask(events)]
    raw = unit.context_columns(events, None)
    context = torch.as_tensor(unit.context_array(raw))
    refs = {k: ak.to_numpy(v).astype(np.float64) for k, v in unit.reference_columns(events, None, raw).items()}
    gen = np.stack([ak.to_numpy(raw[c]).astype(np.float64) for c in ("met_px", "met_py")], 1)

    def errors(model) -> tuple[float, float]:
        mu, sigma = (t.detach().numpy() for t in model.predict(context))
        centre = unit.target_pipeline.inverse(mu, refs)
        upper = unit.target_pipeline.inverse(mu + sigma, refs)  # transforms of MET x, y are affine
        centre_met = np.stack([centre["met_px"], centre["met_py"]], 1)
        sigma_met = np.stack([upper["met_px"], upper["met_py"]], 1) - centre_met
        return float(np.median(np.abs(centre_met - gen))), float(np.median(sigma_met))

    trained_err, trained_sigma = errors(unit.model)
    torch.manual_seed(0)
    untrained = build_model({**unit.model.config}, unit.model.n_targets, unit.model.n_context)
    untrained_err, untrained_sigma = errors(untrained)
    # targets are reco - gen, so even the untrained mean sits near the truth; the scale has to be learnt
    assert trained_err < 0.3 * MET_RES, (trained_err, untrained_err)
    assert abs(np.log(trained_sigma / MET_RES)) < abs(np.log(untrained_sigma / MET_RES)), (trained_sigma, untrained_sigma)
    assert 0.6 * MET_RES < trained_sigma < 1.6 * MET_RES, trained_sigma
