"""Analysis-level validation: spec parsing (strict keys, checked expressions), the cut flow and observables
on a hand-built NanoAOD-like sample with known answers, yields/pulls/χ² on known numbers, and
``flashsim validate --analysis`` end to end with every packaged spec on a small refsim sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from flashsim.analysis import AnalysisSpec, load_analysis, run_analysis
from flashsim.errors import ConfigError, InputError
from flashsim.locations import analysis_names
from flashsim.validate import metrics as M
from flashsim.validate.analysis import compare_analysis

PACKAGED = ["ttbar_ljets", "vbf_hmumu", "wjets_munu", "zmumu_jets"]

SPEC = """
name = "tiny"
[objects.mu]
collection = "Muon"
cut = "(pt > 20) & tightId"
[objects.jet]
collection = "Jet"
cut = "pt > 30"
clean = { against = "mu", dr = 0.4 }
[objects.bjet]
collection = "jet"
cut = "btag > 0.5"
[[cuts]]
name = "one muon"
cut = "n_mu == 1"
[[cuts]]
name = "a jet"
cut = "leading(jet.pt) > 30"
[[cuts]]
name = "MET"
cut = "MET_pt > 10"
[[observables]]
name = "mt"
expression = "mt(mu, MET)"
bins = [4, 0, 200]
[[observables]]
name = "jet_pt"
expression = "jet.pt"
edges = [30, 60, 100, 200]
[[observables]]
name = "ht"
expression = "sum(jet.pt)"
bins = [2, 0, 400]
"""


def _spec(tmp_path: Path, text: str = SPEC) -> AnalysisSpec:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return load_analysis(path)


def _records(rows: list[list[dict]], fields: list[str]) -> ak.Array:
    return ak.Array([[{f: o[f] for f in fields} for o in ev] for ev in rows])


def tiny_events() -> ak.Array:
    """Five events: (0) one good muon, a clean jet; (1) the jet overlaps the muon; (2) two good muons;
    (3) one good muon, jet, but MET = 5; (4) a muon failing tightId, a jet. genWeight 2 in event 0."""
    mu = lambda pt, phi, tight=True, eta=0.0: {"pt": pt, "eta": eta, "phi": phi, "mass": 0.0, "tightId": tight}  # noqa: E731
    jet = lambda pt, eta, phi, btag=0.0: {"pt": pt, "eta": eta, "phi": phi, "mass": 0.0, "btag": btag}  # noqa: E731
    muons = [[mu(40, 0.0)], [mu(40, 0.0)], [mu(50, 0.0), mu(30, 1.0)], [mu(40, 0.0)], [mu(40, 0.0, tight=False)]]
    jets = [[jet(80, 1.0, 2.0, 0.9), jet(35, -1.0, 1.0)], [jet(60, 0.1, 0.1)], [jet(50, 1.5, 2.0)], [jet(45, 0.5, 3.0)], [jet(70, 0.0, 2.0)]]
    return ak.zip({
        "Muon": _records(muons, ["pt", "eta", "phi", "mass", "tightId"]),
        "Jet": _records(jets, ["pt", "eta", "phi", "mass", "btag"]),
        "MET": ak.zip({"pt": np.array([30.0, 20.0, 40.0, 5.0, 30.0]), "phi": np.array([np.pi, 0.0, 1.0, 0.0, 1.0])}),
        "genWeight": np.array([2.0, 1.0, 1.0, 1.0, 1.0]),
        "event": np.arange(5),
    }, depth_limit=1)


# ---- the packaged specs and the strict parser


def test_packaged_specs_are_found_by_name_and_parse() -> None:
    assert analysis_names() == PACKAGED
    for name in PACKAGED:
        spec = load_analysis(name)
        assert spec.name == name and spec.cuts and spec.observables
        assert {"Muon", "Jet"} <= set(spec.collections())


def test_unknown_packaged_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"no analysis spec 'wjets_mnu'.*did you mean 'wjets_munu'"):
        load_analysis("wjets_mnu")


@pytest.mark.parametrize("change, message", [
    (('cut = "(pt > 20) & tightId"', 'cutt = "(pt > 20) & tightId"'), r"objects\.mu\.cutt: unknown key 'cutt' \(did you mean 'cut'\?\)"),
    (("[[observables]]\nname = \"mt\"", "[[observable]]\nname = \"mt\""), r"observable: unknown key 'observable' \(did you mean 'observables'\?\)"),
    (('name = "one muon"', 'nme = "one muon"'), r"cuts\[0\]\.nme: unknown key 'nme' \(did you mean 'name'\?\)"),
    (("dr = 0.4 }", "dR = 0.4 }"), r"objects\.jet\.clean\.dR: unknown key 'dR' \(did you mean 'dr'\?\)"),
])
def test_unknown_keys_name_the_file_the_table_and_the_closest_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _spec(tmp_path, SPEC.replace(*change, 1))
    assert str(tmp_path / "spec.toml") in str(err.value)


@pytest.mark.parametrize("change, message", [
    (('"(pt > 20) & tightId"', '"pt > 20 & tightId"'), r"objects\.mu\.cut: .*bind tighter than comparisons"),
    (('"n_mu == 1"', '"__import__(\'os\') == 1"'), r"cuts\[0\]\.cut: only \[.*'leading'.*\] may be called"),
    (('"MET_pt > 10"', '"MET_pt >"'), r"cuts\[2\]\.cut: cannot parse"),
    (('"sum(jet.pt)"', '"sum(jet.pt.x)"'), r"observables\[2\]\.expression: only name\.field may be read"),
    (('"mt(mu, MET)"', '"[x for x in MET]"'), r"ListComp is not allowed"),
    (('against = "mu"', 'against = "bjet"'), r"objects\.jet\.clean\.against: 'bjet' is not an object defined before 'jet'"),
    (("bins = [4, 0, 200]", "bins = [4, 200, 0]"), r"observables\[0\]: bins = \[4\.0, 200\.0, 0\.0\]: want \[n, low, high\]"),
    (("bins = [4, 0, 200]", "bins = [4, 0, 200]\nedges = [0, 1]"), r"give either bins"),
    (('name = "MET"', 'name = "a jet"'), r"cuts: names \['a jet'\] are used more than once"),
])
def test_bad_specs_are_refused_with_their_table_path(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in SPEC
    with pytest.raises(ConfigError, match=message):
        _spec(tmp_path, SPEC.replace(*change, 1))


# ---- evaluation on a hand-built sample with known answers


def test_cut_flow_weights_and_observables_on_known_events(tmp_path: Path) -> None:
    sel = run_analysis(_spec(tmp_path), tiny_events())
    assert sel.weight_columns == ["genWeight"]
    # one muon: 0, 1, 3 (2 has two, 4 fails tightId); a clean jet > 30: 0, 3 (1's jet is within 0.4 of the muon); MET > 10: 0
    assert [list(np.flatnonzero(m)) for m in sel.passed] == [[0, 1, 2, 3, 4], [0, 1, 3], [0, 3], [0]]
    values, weights = sel.observables["mt"]
    assert np.allclose(values, [np.sqrt(2 * 40 * 30 * 2)]) and np.allclose(weights, [2.0])  # Δφ = π
    values, weights = sel.observables["jet_pt"]  # one entry per jet, each with its event's weight
    assert np.allclose(values, [80, 35]) and np.allclose(weights, [2, 2])
    assert np.allclose(sel.observables["ht"][0], [115])


def test_oversampled_flash_weights_multiply_gen_weights(tmp_path: Path) -> None:
    events = tiny_events()
    events = ak.with_field(events, ak.zip({"weight": np.full(5, 0.25), "oversampleIndex": np.zeros(5, np.int32)}), "FlashSim")
    sel = run_analysis(_spec(tmp_path), events)
    assert sel.weight_columns == ["genWeight", "FlashSim_weight"]
    assert np.allclose(sel.weights, [0.5, 0.25, 0.25, 0.25, 0.25])
    assert M.weighted_yield(sel.weights[sel.passed[1]]) == (1.0, math.sqrt(0.5**2 + 2 * 0.25**2))


def test_kinematic_functions(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """
name = "kin"
[objects.mu]
collection = "Muon"
[objects.jet]
collection = "Jet"
[[observables]]
name = "m"
expression = "mass(mu)"
bins = [1, 0, 1000]
[[observables]]
name = "ptll"
expression = "pair_pt(mu)"
bins = [1, 0, 1000]
[[observables]]
name = "deta"
expression = "deta(jet)"
bins = [1, 0, 10]
[[observables]]
name = "dphi"
expression = "dphi(mu, MET)"
bins = [1, 0, 4]
[[observables]]
name = "dr"
expression = "dr(mu, jet)"
bins = [1, 0, 10]
[[observables]]
name = "second"
expression = "subleading(jet.pt)"
bins = [1, 0, 1000]
""")
    events = tiny_events()
    sel = run_analysis(spec, events)
    # event 2: muons (50, η 0, φ 0) and (30, η 0, φ 1), massless: m² = 2·50·30·(1 - cos 1)
    assert np.isclose(sel.observables["m"][0][0], np.sqrt(2 * 50 * 30 * (1 - np.cos(1.0))))
    assert np.isclose(sel.observables["ptll"][0][0], np.hypot(50 + 30 * np.cos(1.0), 30 * np.sin(1.0)))
    assert sel.undefined["m"] == 4  # the other events have one muon: undefined, not filled
    assert np.allclose(sel.observables["deta"][0], [2.0])  # event 0 only has two jets
    assert np.allclose(sel.observables["dphi"][0], [np.pi, 0.0, 1.0, 0.0, 1.0])
    assert np.allclose(sel.observables["dr"][0], [np.hypot(1.0, 2.0), np.hypot(0.1, 0.1), np.hypot(1.5, 2.0), np.hypot(0.5, 3.0), 2.0])
    assert np.allclose(sel.observables["second"][0], [35.0])


@pytest.mark.parametrize("change, error, message", [
    (('collection = "Muon"', 'collection = "Muons"'), InputError, r"objects\.mu\.collection: 'Muons' is not a collection.*did you mean 'Muon'"),
    (("tightId", "tightID"), InputError, r"objects\.mu\.cut: Muon of the sample has no field 'tightID'.*did you mean 'tightId'"),
    (('"MET_pt > 10"', '"MET_ptt > 10"'), InputError, r"cuts\[2\] \(MET\): 'MET_ptt' is neither.*did you mean 'MET_pt'"),
    (('"sum(jet.pt)"', '"sum(jet.ptt)"'), InputError, r"observables\[2\] \(ht\): jet\.ptt: .*did you mean 'pt'"),
    (('"leading(jet.pt) > 30"', '"jet.pt > 30"'), InputError, r"cuts\[1\] \(a jet\).*a list per event"),
    (('"mt(mu, MET)"', '"mass(mu, MET)"'), InputError, r"observables\[0\] \(mt\): mass\(\) needs the field 'eta'"),
    (('"mt(mu, MET)"', '"mu.pt + jet.pt"'), InputError, r"observables\[0\] \(mt\): cannot evaluate 'mu.pt \+ jet.pt'"),
    (('"MET_pt > 10"', '"MET"'), InputError, r"cuts\[2\] \(MET\): 'MET' gives objects, not numbers"),
])
def test_names_a_sample_lacks_are_errors_naming_the_spec(tmp_path: Path, change, error, message) -> None:
    spec = _spec(tmp_path, SPEC.replace(*change, 1))
    with pytest.raises(error, match=message) as err:
        run_analysis(spec, tiny_events())
    assert str(tmp_path / "spec.toml") in str(err.value)


# ---- yields, pulls and χ² on known numbers


def test_yields_pulls_and_shape_chi2() -> None:
    assert M.weighted_yield(np.array([1.0, 2.0, 2.0])) == (5.0, 3.0)
    assert math.isclose(M.yield_pull(110, 10, 100, 10), 10 / math.sqrt(200))
    assert math.isnan(M.yield_pull(0, 0, 0, 0))
    # per-event differences [0, 1, 0, 1]: 2 / sqrt(2)
    assert math.isclose(M.paired_pull(np.array([1.0, 1, 0, 1]), np.array([1.0, 0, 0, 0])), math.sqrt(2))
    # shapes [1/4, 3/4] vs [3/4, 1/4], each bin's variance (1 + 3) / 16: chi2 = 2 * (1/2)² / (1/4) = 2, ndf = 1
    assert M.shape_chi2(np.array([1.0, 3]), np.array([1.0, 3]), np.array([3.0, 1]), np.array([3.0, 1])) == (2.0, 1)
    chi2, ndf = M.shape_chi2(np.zeros(3), np.zeros(3), np.ones(3), np.ones(3))
    assert math.isnan(chi2) and ndf == 0


def test_compare_reports_pulls_and_an_empty_selection(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    ref = tiny_events()
    flash = ak.with_field(ref, ak.zip({"pt": ref.MET.pt * 0.1, "phi": ref.MET.phi}), "MET")  # MET 3 GeV at most: no event passes
    res = compare_analysis(spec, flash, ref, paired=True)
    last = res["cutflow"][-1]
    assert (last["events_flash"], last["events_reference"], last["yield_reference"]) == (0, 1, 2.0)
    assert math.isclose(last["pull"], -2.0 / 2.0) and math.isclose(last["pull_paired"], -1.0)
    assert res["notes"] == ["no event passes the selection in the flash sample: the observables are not compared"]
    assert res["observables"]["mt"]["ndf"] == 0 and "plot" not in res["observables"]["mt"]


# ---- flashsim validate --analysis, end to end


@pytest.fixture(scope="module")
def refsim_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """60 refsim W+jets events and the zoo chain's simulation of their GEN, written as ROOT files."""
    pytest.importorskip("pythia8mc")
    from flashsim.chain import DEFAULT_CHAIN, Chain
    from flashsim.io import write_events
    from flashsim.refsim import DetectorParams, generate

    ref = ak.concatenate(list(generate("wjets", 60, pileup=10.0, seed=7, params=DetectorParams(pu_pool_size=200))))
    flash = Chain(list(DEFAULT_CHAIN)).run(ref[[f for f in ref.fields if f not in ("Muon", "Jet", "MET")]], seed=1)
    root = tmp_path_factory.mktemp("analysis")
    return write_events(flash, root / "flash.root"), write_events(ref, root / "ref.root")


def test_validate_analysis_cli_runs_every_packaged_spec(tmp_path: Path, refsim_pair: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from flashsim.cli import app

    flash, ref = refsim_pair
    args = ["validate", "--flash", flash, "--reference", ref, "--out", tmp_path / "out"]
    result = CliRunner().invoke(app, [str(a) for a in args + [x for n in PACKAGED for x in ("--analysis", n)]])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["collections"] == {} and list(metrics["analyses"]) == PACKAGED
    html = (tmp_path / "out" / "report.html").read_text()
    for name, a in metrics["analyses"].items():
        assert a["paired"] and a["cutflow"][0]["events_flash"] == a["cutflow"][0]["events_reference"] == 60
        assert [r["cut"] for r in a["cutflow"][1:]] == [c.name for c in load_analysis(name).cuts]
        assert f"analysis {name}" in html and f"analysis {name}:" in result.output
        for o in a["observables"].values():
            assert ("plot" in o) == (o["flash"]["entries"] > 0 and o["reference"]["entries"] > 0)
            assert "plot" not in o or (tmp_path / "out" / o["plot"]).is_file()
    # 60 W+jets events hold no VBF H->mumu candidate: reported, not a crash
    assert "no event passes the selection" in " ".join(metrics["analyses"]["vbf_hmumu"]["notes"])
    assert any("plot" in o for o in metrics["analyses"]["wjets_munu"]["observables"].values())


def test_validate_analysis_cli_errors_are_one_line(tmp_path: Path, refsim_pair: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from flashsim.cli import app

    flash, ref = refsim_pair
    spec = tmp_path / "bad.toml"
    spec.write_text(SPEC.replace('collection = "Jet"', 'collection = "Jets"'))
    result = CliRunner().invoke(app, ["validate", "--flash", str(flash), "--reference", str(ref), "--out", str(tmp_path / "o"),
                                      "--analysis", str(spec)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert f"objects.jet.collection: 'Jets' is not in the flash sample {flash}" in result.output
    assert "did you mean 'Jet'" in result.output
