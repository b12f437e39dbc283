"""Reference simulation (Pythia8 + parametric detector): physics figures and plumbing.

The module-scoped ``sample`` (ttbar + W+jets at <nPU> = 35) takes about a minute and is
marked slow; the other tests run a few dozen events or no Pythia at all.
"""

from __future__ import annotations

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from flashsim.errors import ConfigError  # noqa: E402
from flashsim.refsim import DetectorParams, PileupPool, generate, simulate_detector  # noqa: E402
from flashsim.refsim.gen import FROM_HARD_PROCESS, IS_HARD_PROCESS, IS_LAST_COPY, IS_PROMPT  # noqa: E402

N_SLOW = 1500  # events per process in the slow sample
POOL = 500  # min-bias events in the test pileup pool


def _auc(sig, bkg):
    """ROC AUC by the Mann-Whitney rank sum."""
    from scipy.stats import rankdata

    x = np.concatenate([sig, bkg])
    r = rankdata(x)
    return (r[: len(sig)].sum() - len(sig) * (len(sig) + 1) / 2) / (len(sig) * len(bkg))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("refsim_cache")


@pytest.fixture(scope="module")
def params():
    return DetectorParams(pu_pool_size=POOL)


@pytest.fixture(scope="module")
def sample(cache_dir, params):
    """ttbar and W+jets events at <nPU> = 35, generated once for the slow tests."""
    chunks = []
    for proc, seed in (("ttbar", 11), ("wjets", 12)):
        chunks += list(generate(proc, N_SLOW, pileup=35.0, seed=seed, params=params, batch_size=250,
                                cache_dir=cache_dir))
    return ak.concatenate(chunks)


@pytest.fixture(scope="module")
def small(cache_dir, params):
    return ak.concatenate(list(generate("wjets", 60, pileup=10.0, seed=7, params=params, batch_size=30,
                                        cache_dir=cache_dir)))


# ------------------------------------------------------------------ fast tests ----------

EXPECTED_TYPES = {
    "run": "uint32", "luminosityBlock": "uint32", "event": "uint64", "genWeight": "float32",
    "Pileup.nPU": "int32", "Pileup.nTrueInt": "float32", "GenMET.pt": "float32", "MET.sumEt": "float32",
    "GenJet.pt": "float32", "GenJet.hadronFlavour": "uint8", "GenJet.partonFlavour": "int32",
    "GenPart.pdgId": "int32", "GenPart.status": "int32", "GenPart.statusFlags": "int32",
    "GenPart.genPartIdxMother": "int32", "Jet.pt": "float32", "Jet.nConstituents": "uint8",
    "Jet.jetId": "int32", "Jet.genJetIdx": "int32", "Jet.hadronFlavour": "int32", "Jet.partonFlavour": "int32",
    "Jet.btagDeepFlavB": "float32", "Jet.qgl": "float32", "Jet.area": "float32", "Muon.charge": "int32",
    "Muon.genPartIdx": "int32", "Muon.genPartFlav": "uint8", "Muon.tightId": "bool", "Muon.sip3d": "float32",
}


def _field(events, dotted):
    out = events
    for part in dotted.split("."):
        out = out[part]
    return out


def test_dtypes_as_nanoaod(small):
    for name, dtype in EXPECTED_TYPES.items():
        values = ak.to_numpy(ak.flatten(_field(small, name), axis=None))
        assert values.dtype == np.dtype(dtype), name


def test_event_structure(small):
    assert len(small) == 60
    assert np.array_equal(ak.to_numpy(small.event), np.arange(1, 61))
    # jets pT-ordered, above threshold, fractions sum to <= 1
    jpt = small.Jet.pt
    assert ak.all(jpt > 15.0)
    assert ak.all(jpt[:, 1:] <= jpt[:, :-1])
    tot = small.Jet.chHEF + small.Jet.neHEF + small.Jet.chEmEF + small.Jet.neEmEF + small.Jet.muEF
    assert ak.all(tot < 1.0 + 1e-4)
    assert set(np.unique(ak.to_numpy(ak.flatten(small.Jet.jetId)))) <= {0, 2, 6}
    b = ak.flatten(small.Jet.btagDeepFlavB)
    assert ak.all((b == -1) | ((b >= 0) & (b <= 1)))
    # cross references point inside their collections
    ngj, ngp = ak.num(small.GenJet), ak.num(small.GenPart)
    assert ak.all(small.Jet.genJetIdx < ngj)
    assert ak.all(small.Muon.genPartIdx < ngp)
    assert ak.all(small.GenPart.genPartIdxMother < ak.local_index(small.GenPart))
    assert ak.all(small.Muon.pt > 3.0)


def test_genpart_flags(small):
    gp = small.GenPart
    # every W event has one stable prompt hard-process muon, kept in GenPart
    mu = gp[(abs(gp.pdgId) == 13) & (gp.status == 1) & ((gp.statusFlags >> FROM_HARD_PROCESS) & 1 == 1)]
    assert ak.all(ak.num(mu) == 1)
    assert ak.all((mu.statusFlags >> IS_PROMPT) & 1 == 1)
    assert ak.all((mu.statusFlags >> IS_LAST_COPY) & 1 == 1)
    w = gp[(abs(gp.pdgId) == 24) & ((gp.statusFlags >> IS_HARD_PROCESS) & 1 == 1)]
    assert ak.all(ak.num(w) >= 1)
    # the reconstructed prompt muon points back at a stable gen muon
    m = small.Muon[small.Muon.genPartIdx >= 0]
    g = small.GenPart[m.genPartIdx]
    assert ak.all(abs(g.pdgId) == 13) and ak.all(g.status == 1)


def test_same_seed_same_output(cache_dir, params):
    def run(seed, workers=1):
        return ak.concatenate(list(generate("wjets", 40, pileup=10.0, seed=seed, params=params, batch_size=20,
                                            workers=workers, cache_dir=cache_dir)))

    a, b, c = run(3), run(3), run(4)
    assert ak.to_list(a) == ak.to_list(b)
    assert ak.to_list(a.Jet.pt) != ak.to_list(c.Jet.pt)
    w1, w2 = run(3, workers=2), run(3, workers=2)
    assert ak.to_list(w1) == ak.to_list(w2)


def test_gen_only(cache_dir):
    ev = next(generate("dy", 20, seed=2, gen_only=True, batch_size=20, cache_dir=cache_dir))
    assert "Jet" not in ev.fields and "GenJet" in ev.fields and "Pileup" in ev.fields


def test_params_toml_roundtrip(tmp_path):
    path = tmp_path / "det.toml"
    path.write_text("[detector]\ntrk_eff_plateau = 0.9\ntag_weights_b = [-4.0, 0, 0, 0, 1, 0, 0, 0]\n")
    p = DetectorParams.from_toml(path)
    assert p.trk_eff_plateau == 0.9 and p.tag_weights_b[0] == -4.0 and isinstance(p.tag_weights_b, tuple)
    assert p.digest() != DetectorParams().digest()
    card = DetectorParams(mu_eff_barrel=0.9).to_toml(tmp_path / "card.toml")
    assert DetectorParams.from_toml(card) == DetectorParams(mu_eff_barrel=0.9)
    path.write_text("no_such_field = 1\n")
    with pytest.raises(ConfigError, match=r"det\.toml: unknown DetectorParams field\(s\): 'no_such_field'"):
        DetectorParams.from_toml(path)
    with pytest.raises(KeyError, match="trk_eff_plateu.*did you mean 'trk_eff_plateau'"):
        DetectorParams().replace(trk_eff_plateu=1.0)


def test_cli_writes_nanoaod(tmp_path, cache_dir):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from flashsim.refsim.cli import refsim

    app = typer.Typer()
    app.command()(refsim)
    out = tmp_path / "w.parquet"
    res = CliRunner().invoke(app, ["--process", "wjets", "--events", "20", "--pileup", "0", "--seed", "5",
                                   "-o", str(out), "--cache-dir", str(cache_dir), "--batch-size", "10"])
    assert res.exit_code == 0, res.output
    table = ak.from_parquet(out)
    assert len(table) == 20
    assert {"nJet", "Jet_pt", "Muon_genPartIdx", "GenPart_statusFlags", "Pileup_nPU", "MET_pt"} <= set(table.fields)


def test_refsim_file_reads_with_coffea_and_root(tmp_path, small):
    """A refsim file is valid NanoAOD for coffea (gen cross-references) and ROOT's RDataFrame."""
    import warnings

    from conftest import nanoevents
    from flashsim.io import write_events

    path = write_events(small, tmp_path / "refsim.root")
    events = nanoevents(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jet_gen, muon_gen = events.Jet.matched_gen, events.Muon.matched_gen
    matched = small.Jet.genJetIdx >= 0
    assert ak.sum(~ak.is_none(jet_gen.pt, axis=1)) == ak.sum(matched)
    assert ak.all(ak.fill_none(jet_gen.pt, 0)[matched] == small.GenJet.pt[small.Jet.genJetIdx[matched]])
    has_muon = small.Muon.genPartIdx >= 0
    assert ak.sum(has_muon) > 0
    assert ak.all(abs(ak.fill_none(muon_gen.pdgId, 0)[has_muon]) == 13)
    ROOT = pytest.importorskip("ROOT")
    df = ROOT.RDataFrame("Events", str(path))
    n_matched = df.Define("n", "Sum(Jet_genJetIdx >= 0)").Sum("n").GetValue()
    assert n_matched == ak.sum(matched)
    assert df.Filter("nMuon > 0 && Muon_pt[0] > 0").Count().GetValue() == ak.sum(ak.num(small.Muon) > 0)


def _synthetic_gen(n_events, rng):
    """A hand-made GEN batch (no Pythia): one 40 GeV muon and a 100 GeV 'jet' of pions per event."""
    parts = []
    for _ in range(n_events):
        k = 20
        pt = rng.dirichlet(np.ones(k)) * 100.0
        eta = 0.3 + 0.05 * rng.standard_normal(k)
        phi = 1.0 + 0.05 * rng.standard_normal(k)
        pid = rng.choice([211, -211, 22, 130], size=k)
        pt = np.r_[pt, 40.0]
        eta = np.r_[eta, -1.0]
        phi = np.r_[phi, -2.0]
        pid = np.r_[pid, 13]
        m = np.where(np.abs(pid) == 211, 0.1396, np.where(pid == 130, 0.4976, np.where(pid == 13, 0.10566, 0.0)))
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        parts.append({
            "px": px, "py": py, "pz": pz, "e": np.sqrt(px**2 + py**2 + pz**2 + m**2), "pdgId": pid,
            "charge": np.where(pid == 211, 1, np.where((pid == -211) | (pid == 13), -1, 0)),
            "vx": np.zeros(k + 1), "vy": np.zeros(k + 1), "vz": np.zeros(k + 1),
            "genPartIdx": np.r_[np.full(k, -1), 0], "genPartFlav": np.r_[np.zeros(k), 1],
        })
    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    types = {"pdgId": np.int32, "charge": np.int8, "genPartIdx": np.int32, "genPartFlav": np.uint8}
    cols = {k: v.astype(types.get(k, np.float32)) for k, v in cols.items()}
    particle = ak.unflatten(ak.zip(cols), np.full(n_events, 21))
    genjet = ak.unflatten(ak.zip({"pt": np.full(n_events, 100.0, np.float32), "eta": np.full(n_events, 0.3, np.float32),
                                  "phi": np.full(n_events, 1.0, np.float32), "hadronFlavour": np.zeros(n_events, np.uint8),
                                  "partonFlavour": np.ones(n_events, np.int32)}), np.ones(n_events, np.int64))
    return {"Particle": particle, "GenJet": genjet}


def test_detector_alone_without_pythia():
    rng = np.random.default_rng(1)
    gen = _synthetic_gen(200, rng)
    reco = simulate_detector(gen, PileupPool.empty(), DetectorParams(), rng, pileup_mean=0.0)
    assert ak.all(reco["Pileup"].nPU == 0)
    mu = reco["Muon"]
    eff = ak.mean(ak.num(mu) >= 1)
    assert 0.9 < eff <= 1.0
    lead = ak.flatten(mu.pt[:, :1])
    assert 0.005 < np.std(lead / 40.0) < 0.05
    jets = reco["Jet"]
    assert ak.mean(ak.sum(jets.genJetIdx == 0, axis=1)) > 0.9
    # the muon forms its own jet (muEF ~ 1) and the pion jet has muEF ~ 0
    assert ak.max(jets.muEF) > 0.8


# ------------------------------------------------------------------ slow physics tests ---

def _matched(events, min_pt=0.0, max_abs_eta=99.0):
    j = events.Jet
    m = (j.genJetIdx >= 0) & (j.pt > min_pt) & (abs(j.eta) < max_abs_eta)
    ngen = ak.to_numpy(ak.num(events.GenJet))
    first = np.cumsum(ngen) - ngen
    idx = ak.to_numpy(ak.flatten((j.genJetIdx + first)[m]))
    return ak.flatten(j[m]), ak.flatten(events.GenJet)[idx]


@pytest.mark.slow
def test_jet_response_and_resolution(sample):
    j, g = _matched(sample)
    r = ak.to_numpy(j.pt / g.pt)
    gpt = ak.to_numpy(g.pt)
    high = gpt > 50
    mean = r[high].mean()
    print(f"jet response (gen pT > 50): {mean:.3f} from {high.sum()} jets")
    assert abs(mean - 1.0) < 0.05
    widths = []
    for lo, hi in ((30, 50), (50, 100), (100, 200), (200, 2000)):
        s = (gpt > lo) & (gpt < hi)
        q16, q84 = np.percentile(r[s], [16, 84])
        widths.append((q84 - q16) / 2)
    print("jet resolution (half 68% width) in gen pT bins 30-50-100-200-: " + ", ".join(f"{w:.3f}" for w in widths))
    assert all(a > b for a, b in zip(widths, widths[1:]))


@pytest.mark.slow
def test_btag_roc(sample):
    j, _ = _matched(sample, min_pt=30.0, max_abs_eta=2.4)
    hf = ak.to_numpy(j.hadronFlavour)
    b = ak.to_numpy(j.btagDeepFlavB)
    auc_bl = _auc(b[hf == 5], b[hf == 0])
    auc_cl = _auc(b[hf == 4], b[hf == 0])
    auc_bc = _auc(b[hf == 5], b[hf == 4])
    cvl = ak.to_numpy(j.btagDeepFlavCvL)
    auc_cvl = _auc(cvl[hf == 4], cvl[hf == 0])
    print(f"btagDeepFlavB AUC b-vs-light {auc_bl:.3f}, c-vs-light {auc_cl:.3f}, b-vs-c {auc_bc:.3f}; "
          f"CvL AUC c-vs-light {auc_cvl:.3f}  (b/c/light jets {np.sum(hf == 5)}/{np.sum(hf == 4)}/{np.sum(hf == 0)})")
    assert auc_bl >= 0.85
    assert 0.55 < auc_cl < auc_bl
    assert auc_bc > 0.6
    assert auc_cvl > 0.6


@pytest.mark.slow
def test_pileup_jets_rise_with_npu(sample):
    npu = ak.to_numpy(sample.Pileup.nPU)
    fakes = ak.to_numpy(ak.sum(sample.Jet.genJetIdx < 0, axis=1))
    lo, hi = fakes[npu < 30].mean(), fakes[npu > 40].mean()
    print(f"unmatched jets / event: nPU<30 {lo:.2f}, nPU>40 {hi:.2f}")
    assert hi > lo * 1.3


@pytest.mark.slow
def test_muon_efficiency_resolution_isolation(sample):
    gp = sample.GenPart
    prompt = (abs(gp.pdgId) == 13) & (gp.status == 1) & (gp.pt > 10) & (abs(gp.eta) < 2.4) & \
             ((gp.statusFlags >> IS_PROMPT) & 1 == 1)
    idx = ak.local_index(gp)
    found = ak.any(idx[:, :, None] == sample.Muon.genPartIdx[:, None, :], axis=2)
    eff = ak.sum(found & prompt) / ak.sum(prompt)
    m = sample.Muon[sample.Muon.genPartIdx >= 0]
    g = sample.GenPart[m.genPartIdx]
    r = ak.to_numpy(ak.flatten(m.pt / g.pt))
    gpt = ak.to_numpy(ak.flatten(g.pt))
    s = (gpt > 25) & (gpt < 35)
    q16, q84 = np.percentile(r[s], [16, 84])
    res = (q84 - q16) / 2
    flav = ak.to_numpy(ak.flatten(m.genPartFlav))
    iso = ak.to_numpy(ak.flatten(m.pfRelIso04_all))
    iso_p, iso_np = np.median(iso[flav == 1]), np.median(iso[(flav == 5) | (flav == 4)])
    print(f"prompt muon efficiency {eff:.3f}; pT resolution at 25-35 GeV {res:.4f}; "
          f"median pfRelIso04_all prompt {iso_p:.3f} vs b/c {iso_np:.3f}")
    assert 0.90 <= eff <= 0.98
    assert 0.01 <= res <= 0.03
    assert iso_np > 3 * iso_p


@pytest.mark.slow
def test_met_resolution_grows_with_sumet(sample):
    met, gen = sample.MET, sample.GenMET
    dx = ak.to_numpy(met.pt * np.cos(met.phi) - gen.pt * np.cos(gen.phi))
    dy = ak.to_numpy(met.pt * np.sin(met.phi) - gen.pt * np.sin(gen.phi))
    sumet = ak.to_numpy(met.sumEt)
    edges = np.percentile(sumet, [0, 33, 67, 100])
    sig = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        s = (sumet >= lo) & (sumet <= hi)
        sig.append(np.sqrt((np.var(dx[s]) + np.var(dy[s])) / 2))
    print("MET resolution in sumEt terciles: " + ", ".join(f"{x:.1f}" for x in sig) + " GeV")
    assert sig[0] < sig[1] < sig[2]


def test_pileup_pools_are_drawn_per_seed_and_each_overlay_is_rotated_and_mirrored(cache_dir):
    """Samples of different seeds share no min-bias event; one pool event overlaid many times lands at a uniform
    azimuth and mirrored in z half the time, with its particles' momenta and their relative geometry kept."""
    from scipy.stats import kstest

    from flashsim.refsim.pileup import pool_seed

    assert pool_seed(1) == pool_seed(1) != pool_seed(2)
    pools = [PileupPool.load_or_generate(30, cache_dir=cache_dir, seed=pool_seed(s)) for s in (1, 2)]
    events = [{tuple(np.round(p.columns["e"][s : s + n], 3)) for s, n in zip(np.r_[0, np.cumsum(p.counts)[:-1]], p.counts)}
              for p in pools]
    assert not events[0] & events[1], "two seeds' pools hold no common min-bias event"
    pool = pools[0]
    n = int(pool.counts[0])
    one = PileupPool(pool.counts[:1], {c: v[:n] for c, v in pool.columns.items()}, pool.sqrt_s)
    out, counts = one.overlay(np.ones(2000, np.int64), np.random.default_rng(1), sigma_z=50.0)
    assert np.all(counts == n)
    px, py, pz = (out[c].reshape(2000, n) for c in ("px", "py", "pz"))
    lead = np.argmax(np.hypot(px[0], py[0]))
    assert kstest(np.arctan2(py[:, lead], px[:, lead]), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 0.001
    assert 0.45 < np.mean(np.sign(pz[:, lead]) == np.sign(one.columns["pz"][lead])) < 0.55
    assert np.allclose(np.hypot(px, py), np.hypot(one.columns["px"], one.columns["py"]), rtol=1e-5, atol=1e-5)
    assert np.allclose(np.abs(pz), np.abs(one.columns["pz"]), rtol=1e-6)
    angle = np.arctan2(py[:, 1], px[:, 1]) - np.arctan2(py[:, 0], px[:, 0])  # opening between two particles: kept
    original = np.arctan2(one.columns["py"][1], one.columns["px"][1]) - np.arctan2(one.columns["py"][0], one.columns["px"][0])
    assert np.allclose(np.angle(np.exp(1j * (angle - original))), 0, atol=1e-4)


@pytest.mark.slow
def test_every_reco_azimuth_is_within_pi(sample):
    """Smeared azimuths are wrapped (refsim muons once came out at phi = -3.1419 in 5k ttbar events)."""
    for name in ("Muon", "Jet", "Electron", "Photon", "MET"):
        if name in sample.fields:
            phi = ak.to_numpy(ak.flatten(sample[name].phi, axis=None))
            assert np.all(np.abs(phi) <= np.float32(np.pi)), name


@pytest.mark.slow
def test_puppi_met_resists_pileup(sample):
    """PUPPI weights the neutral pileup down: its sumEt barely follows nPU while PF MET's does, and its resolution
    on the GenMET is better at <nPU> = 35."""
    npu = ak.to_numpy(sample.Pileup.nPU).astype(float)
    res = {}
    for name in ("MET", "PuppiMET"):
        met, gen = sample[name], sample.GenMET
        res[name] = np.std(ak.to_numpy(met.pt * np.cos(met.phi) - gen.pt * np.cos(gen.phi)))
        res[name + " slope"] = np.polyfit(npu, ak.to_numpy(met.sumEt), 1)[0]
    print({k: round(float(v), 2) for k, v in res.items()})
    assert res["PuppiMET slope"] < 0.2 * res["MET slope"]
    assert res["PuppiMET"] < res["MET"]
