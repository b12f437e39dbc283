"""On-the-fly simulation of coffea NanoEvents (flashsim.nanoevents) and oversampling-aware histograms
(flashsim.histograms): the docs' processor on a GEN file equals the file route, and the errors are right on toys."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest
from scipy import integrate, stats

from conftest import synthetic_events
from flashsim.chain import DEFAULT_CHAIN, Chain
from flashsim.errors import ChainError, ConfigError, InputError
from flashsim.histograms import fill, fill_variation, reweight
from flashsim.io import read_events, write_events

pytest.importorskip("coffea")
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory  # noqa: E402

from flashsim.nanoevents import simulate  # noqa: E402

DOCS = Path(__file__).parents[1] / "docs" / "analysis.md"
N_GEN = 120


@pytest.fixture(scope="module")
def gen_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GEN-only NanoAOD (synthetic GenJet, GenPart, GenMET, Pileup) of N_GEN events."""
    events = synthetic_events(N_GEN, seed=41)
    return write_events(events[[f for f in events.fields if f not in ("Jet", "MET")]], tmp_path_factory.mktemp("gen") / "gen.root")


def _nanoevents(path: Path, mode: str = "eager") -> ak.Array:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NanoAODSchema warns of every cross-reference a GEN file lacks
        return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode=mode).events()


def _assert_same_histograms(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].values().sum() > 0, name
        np.testing.assert_allclose(a[name].values(flow=True), b[name].values(flow=True), rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(a[name].variances(flow=True), b[name].variances(flow=True), rtol=1e-9, err_msg=name)


def test_docs_processor_on_gen_equals_the_file_route(gen_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The python blocks of docs/analysis.md, run as written: eager, chunked on one process, on a local dask cluster
    (two in-process workers) and from the written file, the same histograms."""
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("tests/test_nanoevents.py runs"):], flags=re.S)
    assert len(blocks) == 3
    (tmp_path / "gen.root").symlink_to(gen_file)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_analysis"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, str(DOCS), "exec"), namespace)
    for route in ("chunked", "on_dask", "from_file"):
        _assert_same_histograms(namespace["eager"], namespace[route])
    assert namespace["eager"]["met"].values(flow=True).sum() == pytest.approx(N_GEN)  # 2 copies of 1/2 per GEN event
    naive = hist.Hist.new.Reg(20, 0, 200, name="met").Weight().fill(met=ak.to_numpy(namespace["written"].MET.pt), weight=0.5)
    assert np.all(namespace["eager"]["met"].variances() >= naive.variances())  # correlated copies: larger errors


@pytest.mark.parametrize("mode", ["eager", "virtual"])
def test_simulated_nanoevents_equal_the_written_file(gen_file: Path, tmp_path: Path, mode: str) -> None:
    """Every flash column, the gen matches and the oversampling weights, as coffea reads them from the file route."""
    Chain(DEFAULT_CHAIN).generate(gen_file, tmp_path / "flash.root", seed=3, keep_gen=True, oversample=2)
    written = _nanoevents(tmp_path / "flash.root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flash = simulate(_nanoevents(gen_file, mode), DEFAULT_CHAIN, seed=3, oversample=2)
        pairs = [(flash.Jet.matched_gen.pt, written.Jet.matched_gen.pt), (flash.Muon.matched_gen.pt, written.Muon.matched_gen.pt)]
    assert len(flash) == 2 * N_GEN and ak.sum(ak.num(flash.Jet)) > N_GEN and ak.sum(ak.num(flash.Muon)) > 0
    for collection in ("Jet", "Muon", "MET", "FlashSim", "GenJet", "GenPart"):
        assert sorted(flash[collection].fields) == sorted(written[collection].fields), collection
        for field in written[collection].fields:
            assert ak.array_equal(flash[collection][field], written[collection][field], check_parameters=False), f"{collection}.{field}"
    for on_the_fly, from_file in pairs:
        assert ak.array_equal(on_the_fly, from_file, check_parameters=False)
    assert ak.sum(~ak.is_none(flash.Jet.matched_gen, axis=1)) == ak.sum(flash.Jet.genJetIdx >= 0) > 0


def test_a_chunk_gives_the_whole_file_numbers_in_the_input_version(gen_file: Path, tmp_path: Path) -> None:
    """A slice of the events comes out as in the run over all of them; a v12 input gives v12 types (int16 indices)."""
    v12 = tmp_path / "gen_v12.root"
    write_events(read_events(gen_file), v12, version="v12")
    whole = simulate(_nanoevents(v12), DEFAULT_CHAIN, seed=5)
    part = simulate(_nanoevents(v12)[40:90], DEFAULT_CHAIN, seed=5)
    assert str(whole.Jet.genJetIdx.type.content.content).startswith("int16")
    assert ak.array_equal(ak.num(part.Jet), ak.num(whole.Jet[40:90]))
    assert ak.array_equal(part.Jet.genJetIdx, whole.Jet.genJetIdx[40:90], check_parameters=False)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(part.Jet.pt)), ak.to_numpy(ak.flatten(whole.Jet.pt[40:90])), rtol=1e-4)


def test_bad_calls_are_one_clear_error(gen_file: Path) -> None:
    events = _nanoevents(gen_file)
    with pytest.raises(ChainError, match="oversample must be >= 1, got 0"):
        simulate(events, DEFAULT_CHAIN, oversample=0)
    with pytest.raises(InputError, match="eager or virtual coffea NanoEvents, got builtins.dict"):
        simulate({"GenJet": events.GenJet}, DEFAULT_CHAIN)  # type: ignore[arg-type]
    with pytest.raises(ChainError, match="needs column 'GenJet'"):
        simulate(events[["run", "luminosityBlock", "event", "Pileup", "GenMET", "GenPart"]], ["jet"])
    with pytest.raises(ConfigError, match="Weight storage"):
        fill(hist.Hist.new.Reg(4, 0, 1, name="x").Double(), events, x=events.GenMET.pt)
    with pytest.raises(ConfigError, match=r"values given for \['y'\], the histogram's axes are \['x'\]"):
        fill(hist.Hist.new.Reg(4, 0, 1, name="x").Weight(), events, y=events.GenMET.pt)


def test_a_bad_gen_value_in_a_runner_chunk_names_the_file_and_entries(tmp_path: Path) -> None:
    from coffea import processor

    events = synthetic_events(N_GEN, seed=41)
    pt = ak.to_numpy(ak.flatten(events.GenJet.pt)).copy()
    pt[int(ak.sum(ak.num(events.GenJet)[:70]))] = np.nan  # the first gen jet of event 70, in the second chunk of 60
    bad = ak.with_field(events, ak.unflatten(pt, ak.num(events.GenJet)), ["GenJet", "pt"])
    path = write_events(bad[[f for f in bad.fields if f not in ("Jet", "MET")]], tmp_path / "bad.root")
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=NanoAODSchema, chunksize=60)
    with warnings.catch_warnings(), pytest.raises(Exception, match=r"bad\.root \(entries 60-120\): branch GenJet_pt: nan in event 10"):
        warnings.simplefilter("ignore")
        runner({"bad": {"files": {str(path): "Events"}}}, lambda chunk: simulate(chunk, "muon,jet,fakejet,met"))


# ------------------------------------------------------------------------------------------- histograms ---

def _toy(n: int, folds: int, rng: np.random.Generator, sigma: float = 0.3) -> ak.Array:
    """n GEN events, x ~ U(0, 1), each simulated ``folds`` times as y = x + N(0, sigma), weight 1/folds."""
    x = np.repeat(rng.uniform(0, 1, n), folds)
    return ak.zip({
        "run": np.ones(n * folds, np.uint32), "luminosityBlock": np.ones(n * folds, np.uint32),
        "event": np.repeat(np.arange(n, dtype=np.uint64), folds),
        "FlashSim": ak.zip({"weight": np.full(n * folds, 1.0 / folds), "oversampleIndex": np.tile(np.arange(folds), n)},
                           depth_limit=1),
        "y": x + rng.normal(0, sigma, n * folds),
    }, depth_limit=1)


def test_without_oversampling_it_is_hists_weight_storage() -> None:
    rng = np.random.default_rng(3)
    events = _toy(500, 1, rng)
    genweight = rng.uniform(0.5, 2.0, len(events))
    channel = rng.choice(["ee", "mumu", "emu"], len(events))
    ours = fill(hist.Hist.new.Reg(12, -0.5, 1.5, name="y").StrCat(["ee"], name="channel").StrCat([], name="ds", growth=True)
                .IntCat([], name="n", growth=True).Weight(), events, weight=genweight, y=events.y, channel=channel, ds="toy",
                n=np.arange(len(events)) % 3)
    theirs = hist.Hist.new.Reg(12, -0.5, 1.5, name="y").StrCat(["ee"], name="channel").StrCat([], name="ds", growth=True)
    theirs = theirs.IntCat([], name="n", growth=True).Weight()
    theirs.fill(y=ak.to_numpy(events.y), channel=channel, ds="toy", n=np.arange(len(events)) % 3, weight=genweight)
    assert list(ours.axes["n"]) == list(theirs.axes["n"]) and ours.values(flow=True)[:, 1].sum() > 0  # grown; others in overflow
    np.testing.assert_allclose(ours.values(flow=True), theirs.values(flow=True), rtol=1e-12)
    np.testing.assert_allclose(ours.variances(flow=True), theirs.variances(flow=True), rtol=1e-12)


def test_jagged_entries_are_summed_per_gen_event_before_squaring() -> None:
    """Several objects per event and copies: the variance is Σ over GEN events of (their weight in the bin)², by brute force."""
    rng = np.random.default_rng(4)
    events = _toy(60, 3, rng)
    counts = rng.integers(0, 4, len(events))
    pt = ak.unflatten(rng.uniform(0, 4, int(counts.sum())), counts)
    h = fill(hist.Hist.new.Reg(4, 0, 4, name="pt").Weight(), events, pt=pt)
    expected_value, expected_variance = np.zeros(4), np.zeros(4)
    for gen in range(60):
        per_bin = np.zeros(4)
        for copy in range(3):
            for value in pt[3 * gen + copy]:
                per_bin[int(value)] += 1 / 3
        expected_value += per_bin
        expected_variance += per_bin**2
    np.testing.assert_allclose(h.values(), expected_value, rtol=1e-12)
    np.testing.assert_allclose(h.variances(), expected_variance, rtol=1e-12)


def test_oversampled_errors_match_the_fold_formula_and_cover() -> None:
    """Toy experiments of Poisson(λ) GEN events, N = 5 copies each: the estimated variance of a bin matches
    λ (p/N + (N-1)/N q) (p: a copy in the bin, q: two copies of one event in it), the spread of the bin over the toys
    matches it, and ±1σ covers the truth in 68 % of toys; treating the copies as independent undercovers."""
    lam, folds, toys, low, high, sigma = 200, 5, 1000, 0.4, 0.6, 0.3
    rng = np.random.default_rng(5)
    in_bin = lambda x: stats.norm.cdf((high - x) / sigma) - stats.norm.cdf((low - x) / sigma)  # noqa: E731
    p = integrate.quad(in_bin, 0, 1)[0]
    q = integrate.quad(lambda x: in_bin(x) ** 2, 0, 1)[0]
    true_variance = lam * (p / folds + (folds - 1) / folds * q)
    values, variances, naive = np.zeros(toys), np.zeros(toys), np.zeros(toys)
    for toy in range(toys):
        events = _toy(rng.poisson(lam), folds, rng)
        h = fill(hist.Hist.new.Reg(1, low, high, name="y").Weight(), events, y=events.y)
        values[toy], variances[toy] = h.values()[0], h.variances()[0]
        naive[toy] = values[toy] / folds  # Σ w² of independent entries of weight 1/N
    truth = lam * p
    assert np.mean(variances) == pytest.approx(true_variance, rel=0.03)
    assert np.var(values) == pytest.approx(true_variance, rel=0.12)  # the spread of 1000 toys is known to ~5 %
    coverage = np.mean(np.abs(values - truth) < np.sqrt(variances))
    assert abs(coverage - 0.683) < 3 * np.sqrt(0.683 * 0.317 / toys)
    assert np.mean(np.abs(values - truth) < np.sqrt(naive)) < 0.55


def test_reweighting_carries_a_variation_with_its_correlated_error() -> None:
    """FullSim_ref × FlashSim_var / FlashSim_ref on toys: the value is that product bin by bin, and with the covariance of
    the two flash histograms (the same GEN events, reweighted) the estimated variance matches the spread over toys;
    treating the flash histograms as independent overstates it."""
    toys, folds, lam = 400, 2, 400
    rng = np.random.default_rng(6)
    axis = hist.Hist.new.Reg(2, 0.0, 1.0, name="y").Weight()
    values, estimated, naive = np.zeros((toys, 4)), np.zeros((toys, 4)), np.zeros((toys, 4))
    for toy in range(toys):
        reference = axis.copy().reset()
        reference.fill(y=rng.uniform(0, 1, rng.poisson(4 * lam)))
        events = _toy(rng.poisson(lam), folds, rng)
        factor = 1.0 + 0.5 * events.y  # a per-event variation weight correlated with the observable
        nominal, variation, covariance = fill_variation(axis, events, factor, y=events.y)
        result = reweight(reference, nominal, variation, covariance)
        np.testing.assert_allclose(result.values(flow=True), reference.values(flow=True) * np.divide(
            variation.values(flow=True), nominal.values(flow=True), out=np.zeros(4), where=nominal.values(flow=True) != 0))
        values[toy], estimated[toy] = result.values(flow=True), result.variances(flow=True)
        naive[toy] = reweight(reference, nominal, variation).variances(flow=True)
    spread, mean_estimate = np.var(values, axis=0)[1:3], np.mean(estimated, axis=0)[1:3]
    np.testing.assert_allclose(mean_estimate, spread, rtol=0.2)  # 400 toys: the spread is known to ~7 %
    assert np.all(np.mean(naive, axis=0)[1:3] > 3 * spread)


def test_reweighting_refuses_other_storage_and_axes() -> None:
    weighted = hist.Hist.new.Reg(2, 0.0, 1.0, name="y").Weight()
    with pytest.raises(ConfigError, match="Weight-storage"):
        reweight(hist.Hist.new.Reg(2, 0.0, 1.0, name="y").Double(), weighted, weighted)
    with pytest.raises(ConfigError, match="axes differ"):
        reweight(weighted, hist.Hist.new.Reg(3, 0.0, 1.0, name="y").Weight(), weighted)
