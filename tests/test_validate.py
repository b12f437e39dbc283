"""flashsim.validate: the metrics behave (identical laws ~ floor, shifts detected, known efficiencies
and ROCs recovered) and the report writes its files from synthetic Jet/Muon/MET events."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
from scipy import stats

from flashsim.validate import metrics as M
from flashsim.validate.report import ValidationInputError, gen_efficiency_objects, metrics_dataframe, validate

# --------------------------------------------------------------------------------------------
# synthetic NanoAOD-like events: shared GEN, reco drawn from a parametric detector
# --------------------------------------------------------------------------------------------


def _gen(n: int, seed: int) -> dict:
    r = np.random.default_rng(seed)
    nj = r.poisson(4, n) + 1
    tj = nj.sum()
    genjet = {
        "pt": 20 + r.exponential(30, tj),
        "eta": r.uniform(-2.5, 2.5, tj),
        "phi": r.uniform(-np.pi, np.pi, tj),
        "mass": r.uniform(2, 15, tj),
        "hadronFlavour": r.choice([0, 4, 5], tj, p=[0.7, 0.15, 0.15]).astype(np.int32),
    }
    # GenPart: a few pions and 0-2 stable muons per event
    nmu = r.poisson(0.8, n)
    npi = r.poisson(2, n)
    ngp = nmu + npi
    tg = ngp.sum()
    is_mu = np.concatenate([np.r_[np.ones(a, bool), np.zeros(b, bool)] for a, b in zip(nmu, npi)]) if tg else np.zeros(0, bool)
    genpart = {
        "pt": 5 + r.exponential(20, tg),
        "eta": r.uniform(-2.4, 2.4, tg),
        "phi": r.uniform(-np.pi, np.pi, tg),
        "mass": np.where(is_mu, 0.106, 0.14),
        "pdgId": np.where(is_mu, 13 * r.choice([-1, 1], tg), 211).astype(np.int32),
        "status": np.ones(tg, np.int32),
        "statusFlags": r.choice([0, 1], tg, p=[0.3, 0.7]).astype(np.int32),
        "genPartIdxMother": np.full(tg, -1, np.int32),
    }
    genmet = {"pt": r.exponential(25, n), "phi": r.uniform(-np.pi, np.pi, n)}
    return {"n": n, "nj": nj, "GenJet": genjet, "ngp": ngp, "GenPart": genpart, "GenMET": genmet}


def _reco(gen: dict, seed: int, pt_shift: float = 0.0) -> ak.Array:
    """Reco events from ``gen``; ``pt_shift`` moves the jet pt response by that many resolutions."""
    r = np.random.default_rng(seed)
    n, gj = gen["n"], gen["GenJet"]
    evt_j = np.repeat(np.arange(n), gen["nj"])
    local_j = np.arange(len(evt_j)) - np.repeat(np.cumsum(gen["nj"]) - gen["nj"], gen["nj"])
    eff = 0.5 + 0.45 * (1 - np.exp(-(gj["pt"] - 20) / 25))
    keep = r.uniform(size=len(eff)) < eff
    k = keep.sum()
    res = 0.1
    fl = gj["hadronFlavour"][keep]
    btag = np.where(fl == 5, r.beta(5, 1.5, k), np.where(fl == 4, r.beta(2, 3, k), r.beta(1, 6, k)))
    jets = {
        "pt": gj["pt"][keep] * r.normal(1 + pt_shift * res, res, k),
        "eta": gj["eta"][keep] + r.normal(0, 0.05, k),
        "phi": gj["phi"][keep] + r.normal(0, 0.05, k),
        "mass": gj["mass"][keep] * r.normal(1, 0.15, k),
        "btagDeepFlavB": btag,
        "jetId": r.choice([0, 2, 6], k, p=[0.05, 0.15, 0.8]).astype(np.int32),
        "genJetIdx": local_j[keep].astype(np.int32),
    }
    # fakes (pileup jets without a gen match)
    nfake = r.poisson(0.4, n)
    tf = nfake.sum()
    fakes = {
        "pt": 15 + r.exponential(8, tf), "eta": r.uniform(-2.5, 2.5, tf), "phi": r.uniform(-np.pi, np.pi, tf),
        "mass": r.uniform(2, 8, tf), "btagDeepFlavB": r.beta(1, 6, tf),
        "jetId": r.choice([0, 2, 6], tf, p=[0.3, 0.3, 0.4]).astype(np.int32), "genJetIdx": np.full(tf, -1, np.int32),
    }
    evt_all = np.concatenate([evt_j[keep], np.repeat(np.arange(n), nfake)])
    order = np.argsort(evt_all, kind="stable")
    jet_counts = np.bincount(evt_all, minlength=n)
    jet_cols = {f: ak.unflatten(np.concatenate([jets[f], fakes[f]])[order], jet_counts) for f in jets}

    gp = gen["GenPart"]
    evt_g = np.repeat(np.arange(n), gen["ngp"])
    local_g = np.arange(len(evt_g)) - np.repeat(np.cumsum(gen["ngp"]) - gen["ngp"], gen["ngp"])
    mu = (np.abs(gp["pdgId"]) == 13) & (r.uniform(size=len(evt_g)) < 0.9)
    km = mu.sum()
    muons = {
        "pt": gp["pt"][mu] * r.normal(1, 0.02, km),
        "eta": gp["eta"][mu] + r.normal(0, 0.01, km),
        "phi": gp["phi"][mu] + r.normal(0, 0.01, km),
        "charge": (-np.sign(gp["pdgId"][mu])).astype(np.int32),
        "pfRelIso03_all": r.exponential(0.1, km),
        "looseId": r.uniform(size=km) < 0.95,
        "genPartIdx": local_g[mu].astype(np.int32),
    }
    mu_counts = np.bincount(evt_g[mu], minlength=n)
    gm = gen["GenMET"]
    return ak.Array({
        "event": np.arange(n, dtype=np.uint64),
        "Jet": ak.zip(jet_cols),
        "GenJet": ak.zip({f: ak.unflatten(v, gen["nj"]) for f, v in gj.items()}),
        "Muon": ak.zip({f: ak.unflatten(v, mu_counts) for f, v in muons.items()}),
        "GenPart": ak.zip({f: ak.unflatten(v, gen["ngp"]) for f, v in gp.items()}),
        "MET": ak.zip({"pt": np.abs(gm["pt"] + r.normal(0, 8, n)), "phi": gm["phi"] + r.normal(0, 0.2, n)}, depth_limit=1),
        "GenMET": ak.zip(gm, depth_limit=1),
    })


def _jagged(n: int, seed: int, shift: float = 0.0, discrete: bool = False) -> ak.Array:
    r = np.random.default_rng(seed)
    counts = r.poisson(4, n)
    v = r.choice([0, 2, 6], counts.sum(), p=[0.1, 0.3, 0.6]).astype(float) if discrete else r.normal(shift, 1, counts.sum())
    return ak.unflatten(v, counts)


# --------------------------------------------------------------------------------------------
# noise-floor ratio
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_identical_law_ratio_near_one(seed):
    ref = _jagged(3000, 100 + seed)
    flash = _jagged(3000, 200 + seed)
    r = M.noise_floor_ratio(flash, ref, n_splits=8, seed=seed)
    assert 0.7 < r.ratio < 1.4, r
    assert r.n_splits == 8 and r.w1_floor > 0
    d = M.noise_floor_ratio(_jagged(3000, 300 + seed, discrete=True), _jagged(3000, 400 + seed, discrete=True), seed=seed)
    assert 0.5 < d.ratio < 2.0, d  # discrete targets are noisier (DESIGN.md); still near the floor


def test_identical_law_ratio_independent_samples():
    ref = _jagged(6000, 11)
    flash = _jagged(2000, 12)
    r = M.noise_floor_ratio_independent(flash, ref, n_splits=8, seed=0)
    assert 0.7 < r.ratio < 1.4, r
    # per-event (1-D) inputs too
    r1 = M.noise_floor_ratio_independent(np.random.default_rng(1).normal(size=2000),
                                         np.random.default_rng(2).normal(size=5000))
    assert 0.7 < r1.ratio < 1.4, r1


def test_ratio_rises_monotonically_with_shift():
    ref = _jagged(3000, 21)
    ratios = [M.noise_floor_ratio(_jagged(3000, 22, shift=s), ref).ratio for s in (0.0, 0.05, 0.1, 0.2, 0.4)]
    assert ratios[0] < 1.4
    assert all(b > a for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[-1] > 5


def test_paired_split_needs_equal_events():
    with pytest.raises(ValueError, match="same number of events"):
        M.noise_floor_ratio(_jagged(100, 1), _jagged(120, 2))


# --------------------------------------------------------------------------------------------
# classifier two-sample test
# --------------------------------------------------------------------------------------------


def _objects(n_events: int, seed: int, shift: float = 0.0):
    r = np.random.default_rng(seed)
    counts = r.poisson(3, n_events)
    n = counts.sum()
    gen = r.exponential(1, n)
    x = np.column_stack([gen * r.normal(1 + shift, 0.2, n), r.normal(0, 1, n), gen])
    return x, np.repeat(np.arange(n_events), counts)


def test_classifier_identical_law_auc_half():
    xf, ef = _objects(2000, 1)
    xr, er = _objects(2000, 2)
    split = M.event_splits(2000, 2000, paired=True, n_splits=1, seed=0)[0]
    res = M.classifier_two_sample_test(xf, ef, xr, er, split, seed=0, max_rows=4000)
    assert abs(res["auc"] - 0.5) < 0.04, res
    assert abs(res["auc_ref_halves"] - 0.5) < 0.04, res


def test_classifier_auc_rises_with_shift():
    xr, er = _objects(1500, 3)
    aucs = []
    for s in (0.0, 0.05, 0.1, 0.2):  # in units of the 0.2 resolution: 0, 0.25, 0.5, 1 sigma
        xf, ef = _objects(1500, 4, shift=s)
        aucs.append(M.classifier_auc(xf, xr, groups0=ef, groups1=er, seed=0, max_rows=4000, n_folds=3))
    assert abs(aucs[0] - 0.5) < 0.04
    assert all(b > a for a, b in zip(aucs, aucs[1:])), aucs
    assert aucs[-1] > 0.65, aucs


# --------------------------------------------------------------------------------------------
# ROC, efficiency, response, matching, bands
# --------------------------------------------------------------------------------------------


def test_roc_auc_of_known_separable_score():
    r = np.random.default_rng(5)
    n = 20000
    flav = r.choice([0, 4, 5], n)
    score = np.where(flav == 5, r.normal(1.0, 1, n), np.where(flav == 4, r.normal(0.5, 1, n), r.normal(0, 1, n)))
    b = M.roc_by_flavour(score, flav, (5,), (0,))
    c = M.roc_by_flavour(score, flav, (4,), (0,))
    assert b["auc"] == pytest.approx(stats.norm.cdf(1.0 / np.sqrt(2)), abs=0.015)
    assert c["auc"] == pytest.approx(stats.norm.cdf(0.5 / np.sqrt(2)), abs=0.015)
    assert M.roc_by_flavour(flav.astype(float), flav, (5,), (0,))["auc"] == 1.0  # perfectly separable
    assert np.all(np.diff(b["fpr"]) >= 0) and b["tpr"][-1] == 1.0


def test_efficiency_profile_of_known_efficiency():
    r = np.random.default_rng(6)
    x = r.uniform(0, 1, 50000)
    passed = r.uniform(size=len(x)) < 0.2 + 0.6 * x
    bins = np.linspace(0, 1, 11)
    p = M.efficiency_profile(x, passed, bins)
    truth = 0.2 + 0.6 * 0.5 * (bins[1:] + bins[:-1])
    err = 0.5 * (p["high"] - p["low"])
    assert np.all(np.abs(p["efficiency"] - truth) < 4 * err), (p["efficiency"], truth)
    assert np.all(p["low"] <= p["efficiency"]) and np.all(p["efficiency"] <= p["high"])


def test_matched_mask_and_gather():
    gen = ak.Array([[{"pt": 10.0}, {"pt": 20.0}, {"pt": 30.0}], [], [{"pt": 5.0}]])
    idx = ak.Array([[2, -1, 0], [], [0, 7]])  # 7 is out of range: ignored
    assert ak.to_list(M.matched_mask(idx, gen)) == [[True, False, True], [], [True]]
    g = M.gather_matched(idx, gen)
    assert ak.to_list(g.pt) == [[30.0, None, 10.0], [], [5.0, None]]


def test_response_profile_recovers_scale_and_resolution():
    r = np.random.default_rng(7)
    x = r.uniform(20, 200, 40000)
    resp = r.normal(1.05, 0.1, len(x))
    p = M.response_profile(x, resp, np.linspace(20, 200, 5))
    assert np.allclose(p["median"], 1.05, atol=4 * p["median_err"].max())
    assert np.allclose(p["resolution"], 0.1, atol=4 * p["resolution_err"].max())
    # the bootstrap errors agree with the large-sample Gaussian ones: 1.2533 and 1.166 sigma/sqrt(n)
    n = p["count"]
    assert np.allclose(p["median_err"], 1.2533 * 0.1 / np.sqrt(n), rtol=0.25)
    assert np.allclose(p["resolution_err"], 1.166 * 0.1 / np.sqrt(n), rtol=0.25)


def test_bootstrap_and_ensemble_bands():
    ref = _jagged(2000, 8)
    bins = np.linspace(-3, 3, 13)
    lo, hi = M.bootstrap_band(ref, bins, n_boot=30)
    dens = np.histogram(ak.to_numpy(ak.flatten(ref)), bins, density=True)[0]
    assert np.all(lo <= hi) and np.mean((lo <= dens) & (dens <= hi)) > 0.7
    ens = M.ensemble_band([np.random.default_rng(s).normal(size=3000) for s in range(4)], bins)
    assert np.all(ens["min"] <= ens["mean"]) and np.all(ens["mean"] <= ens["max"]) and np.all(ens["std"] > 0)


def test_correlation_difference():
    r = np.random.default_rng(9)
    a = r.normal(size=(5000, 2))
    b = a.copy()
    b[:, 1] = 0.6 * b[:, 0] + 0.8 * b[:, 1]
    d, dmax = M.correlation_difference(b, a)
    assert dmax == pytest.approx(0.6, abs=0.05) and d.shape == (2, 2)


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paired_samples():
    gen = _gen(1500, 0)
    return _reco(gen, 1), _reco(gen, 2), _reco(gen, 3, pt_shift=1.0)


def test_gen_efficiency_objects_are_the_gen_muons(paired_samples):
    """The denominator is every stable gen muon (not the pions), flagged where a reco muon points to it;
    a flash sample without gen collections borrows the reference's."""
    ref, _, _ = paired_samples
    gp = ref.GenPart
    is_mu = (abs(gp.pdgId) == 13) & (gp.status == 1)
    objs = gen_efficiency_objects(ref, "Muon")
    np.testing.assert_array_equal(objs["pt"], ak.to_numpy(ak.flatten(gp.pt[is_mu])))
    assert objs["matched"].sum() == ak.sum(ak.num(ref.Muon)) and 0.85 < objs["matched"].mean() < 0.95  # drawn at 0.9
    borrowed = gen_efficiency_objects(ref[["event", "Muon"]], "Muon", ref)
    np.testing.assert_array_equal(borrowed["matched"], objs["matched"])
    with pytest.raises(ValidationInputError, match="'MET' has no gen link"):
        gen_efficiency_objects(ref, "MET")


def test_report_writes_html_json_pngs(paired_samples, tmp_path):
    ref, flash, _ = paired_samples
    m = validate(flash, ref, ["Jet", "Muon", "MET"], tmp_path, n_splits=4, n_bootstrap=10, classifier_max_rows=3000)
    assert m["config"]["paired"] is True
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "Jet" in html and "Muon" in html and "MET" in html
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved["collections"]) == {"Jet", "Muon", "MET"}
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert len(pngs) >= 20
    jet = m["collections"]["Jet"]
    assert "nJet" in jet["variables"] and "genJetIdx" not in jet["variables"]
    assert jet["selection"] == "gen-matched" and jet["gen_link"] == "GenJet"
    assert {"efficiency", "response", "roc", "classifier", "correlation", "by_category"} <= set(jet)
    assert jet["roc"]["btagDeepFlavB"]["b_vs_light"]["auc_reference"] > 0.8
    assert "looseId" in m["collections"]["Muon"]["variables"]  # bool column compared
    assert m["collections"]["Muon"]["by_category"]["by"] == "isPrompt"
    assert m["collections"]["MET"]["kind"] == "singleton" and "nMET" not in m["collections"]["MET"]["variables"]
    # the same law everywhere: a sound model passes
    assert 0.7 < jet["median_ratio"] < 1.4, jet["median_ratio"]
    assert abs(jet["classifier"]["auc"] - 0.5) < 0.05
    df = metrics_dataframe(m)
    assert {"collection", "variable", "ratio", "pass"} <= set(df.columns) and len(df) >= 10


def test_report_fails_a_shifted_model(paired_samples, tmp_path):
    ref, _, shifted = paired_samples
    m = validate(shifted, ref, ["Jet"], tmp_path, n_splits=4, make_plots=False, classifier_max_rows=3000,
                 thresholds={"Jet": {"variables": {"pt": 100.0}}, "ratio_median": 10})
    jet = m["collections"]["Jet"]
    assert jet["variables"]["pt"]["ratio"] > 2 and jet["variables"]["pt"]["pass"] is True  # per-variable override
    assert jet["response"]["ratio"]["ratio"] > 3
    assert jet["classifier"]["auc"] > jet["classifier"]["auc_ref_halves"] + 0.05
    assert jet["response"]["vs_pt"]["median_chi2_ndf"] > 10


def test_report_ensemble_and_independent_samples(paired_samples, tmp_path):
    ref, flash, shifted = paired_samples
    m = validate([flash, shifted], ref, ["Jet"], tmp_path, n_splits=4, make_plots=False, classifier_max_rows=2000)
    pt = m["collections"]["Jet"]["variables"]["pt"]
    assert len(pt["ratio_members"]) == 2 and pt["ratio_members"][1] > pt["ratio_members"][0]
    other = _reco(_gen(700, 5), 9)  # different GEN events, fewer of them
    m = validate(other, ref, ["Jet", "MET"], tmp_path, n_splits=8, make_plots=False, classifier_max_rows=2000)
    assert m["config"]["paired"] is False
    assert 0.6 < m["collections"]["Jet"]["median_ratio"] < 1.6


def test_report_splits_by_reco_flavour_without_gen_link(paired_samples, tmp_path):
    """Jets with a hadronFlavour field but no gen link (a flash sample without GenJet) are split by
    that field: ratios per class, ROCs and the per-class plots."""
    ref, flash, _ = paired_samples

    def with_flavour(ev):
        idx = ak.where(ev.Jet.genJetIdx >= 0, ev.Jet.genJetIdx, 0)  # fakes: the flavour of gen jet 0
        return ak.with_field(ev, ev.GenJet.hadronFlavour[idx], ["Jet", "hadronFlavour"])

    m = validate(with_flavour(flash)[["event", "Jet"]], with_flavour(ref), ["Jet"], tmp_path, paired=False,
                 n_splits=2, n_bootstrap=0, classifier_max_rows=1000)
    jet = m["collections"]["Jet"]
    assert jet["gen_link"] is None and jet["selection"] == "all"
    assert jet["by_category"]["by"] == "hadronFlavour" and "pt" in jet["by_category"]["ratios"]["b"]
    assert jet["roc"]["btagDeepFlavB"]["b_vs_light"]["auc_flash"] > 0.8
    assert {"plots/Jet_pt_by_hadronFlavour.png", "plots/Jet_btagDeepFlavB_by_hadronFlavour.png"} <= set(jet["plots"])


def test_cli_writes_report_and_strict_exit(paired_samples, tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    try:
        from flashsim.io import write_events
    except ImportError:
        pytest.skip("flashsim.io not available")
    from flashsim.validate import cli

    ref, flash, _ = paired_samples
    write_events(ref[:600], tmp_path / "ref.parquet")
    write_events(flash[:600], tmp_path / "flash.parquet")
    (tmp_path / "thr.toml").write_text("[MET]\nratio_max = 0.01\n")
    app = typer.Typer()

    @app.callback()
    def _main():
        pass

    app.command("validate")(cli.validate)
    args = ["validate", "--flash", str(tmp_path / "flash.parquet"), "--reference", str(tmp_path / "ref.parquet"),
            "--collections", "MET", "--out", str(tmp_path / "rep"), "--thresholds", str(tmp_path / "thr.toml"),
            "--splits", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "FAIL" in res.output and (tmp_path / "rep" / "report.html").exists()
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["config"]["paired"] is True and saved["collections"]["MET"]["response"]["definition"] == "reco-gen"
    assert CliRunner().invoke(app, args + ["--strict"]).exit_code == 1
    # a bad input: one error line from the flashsim app, exit 1; a usage error: exit 2
    from flashsim.cli import app as flashsim_app

    res = CliRunner().invoke(flashsim_app, [*args[:6], "Electron", *args[7:]])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.startswith("error: ") and "'Electron'" in res.output
    assert CliRunner().invoke(flashsim_app, args + ["--splits", "0"]).exit_code == 2


def test_clear_errors(paired_samples, tmp_path):
    ref, flash, _ = paired_samples
    with pytest.raises(ValidationInputError, match=r"'Electron'.*flash"):
        validate(flash, ref, ["Jet", "Electron"], tmp_path)
    bad = ak.with_field(flash, ak.where(flash.Jet.pt > 60, np.nan, flash.Jet.pt), ["Jet", "pt"])
    with pytest.raises(ValidationInputError, match=r"Jet\.pt has \d+ NaN"):
        validate(bad, ref, ["Jet"], tmp_path, make_plots=False)
    empty = ak.with_field(flash, flash.Jet[flash.Jet.pt < 0], "Jet")
    with pytest.raises(ValidationInputError, match="'Jet' has no objects in the flash sample"):
        validate(empty, ref, ["Jet"], tmp_path, make_plots=False)
    unmatched = ak.with_field(flash, flash.Jet.genJetIdx * 0 - 1, ["Jet", "genJetIdx"])
    with pytest.raises(ValidationInputError, match="'Jet' has no gen-matched object in the flash sample"):
        validate(unmatched, ref, ["Jet"], tmp_path, make_plots=False)
    with pytest.raises(ValidationInputError, match="unknown threshold"):
        validate(flash, ref, ["Jet"], tmp_path, thresholds={"ratio_mx": 2})
