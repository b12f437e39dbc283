"""Preprocessing: every transform and a full pipeline invert exactly on their domain, serialise, and fail loudly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flashsim.errors import TransformError
from flashsim.transforms import (
    TRANSFORMS,
    Categorical,
    ContextPipeline,
    FlavourScores,
    Excess,
    HypotRatio,
    PolarResidual,
    StickBreaking,
    TargetPipeline,
    transform_from_config,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
N = st.integers(1, 40)


def floats(lo, hi, **kw):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, **kw)


def col(elements, n=N):
    return n.flatmap(lambda k: arrays(np.float64, k, elements=elements))


def pair(x_el, ref_el):
    return N.flatmap(lambda k: st.tuples(arrays(np.float64, k, elements=x_el), arrays(np.float64, k, elements=ref_el)))


def _json(t):
    """to_dict -> JSON text -> from_dict."""
    d = json.loads(json.dumps(t.to_dict()))
    return type(t).from_dict(d, column=t.column)


def roundtrip(cfg, x, ref=None, atol=0.0, rtol=0.0, seed=0):
    """Fit, forward with noise, inverse; also through to_dict/from_dict. Returns the forward values."""
    t = transform_from_config(cfg, column="c").fit(x, ref)
    y = t.forward(x, ref, np.random.default_rng(seed))
    assert y.shape == x.shape and np.isfinite(y).all()
    back = t.inverse(y, ref)
    np.testing.assert_allclose(back, x, atol=atol, rtol=rtol)
    t2 = _json(t)
    y2 = t2.forward(x, ref, np.random.default_rng(seed))
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(t2.inverse(y, ref), back)
    return t, y


# -- elementary transforms -----------------------------------------------------------------


@SETTINGS
@given(col(floats(1e-8, 1e8)), st.sampled_from([0.0, 1.0]))
def test_log(x, offset):
    roundtrip({"type": "log", "offset": offset}, x, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(col(floats(-1 + 1e-9, 1e8)))
def test_log1p(x):
    roundtrip({"type": "log1p"}, x, rtol=1e-12, atol=1e-15)


@SETTINGS
@given(col(floats(-1e4, 1e4)), st.sampled_from([0.01, 1.0]))
def test_asinh(x, scale):
    roundtrip({"type": "asinh", "scale": scale}, x, rtol=1e-9, atol=1e-9)
    roundtrip({"type": "asinh", "scale": scale, "offset": -3.0}, x, rtol=1e-9, atol=1e-6)


@SETTINGS
@given(st.tuples(floats(-1e3, 1e3), floats(1e-3, 1e3)).flatmap(
    lambda lw: st.tuples(st.just(lw[0]), st.just(lw[0] + lw[1]),
                         col(st.one_of(st.sampled_from([lw[0], lw[0] + lw[1]]), floats(lw[0], lw[0] + lw[1]))))))
def test_logit(args):
    lo, hi, x = args
    _, y = roundtrip({"type": "logit", "lo": lo, "hi": hi}, x, atol=2e-6 * (hi - lo) + 1e-9 * max(abs(lo), abs(hi)))
    t = transform_from_config({"type": "logit", "lo": lo, "hi": hi})
    assert np.all(t.inverse(t.forward(x), None)[x == lo] == lo)  # bounds are exact
    assert np.all(t.inverse(t.forward(x), None)[x == hi] == hi)
    wild = t.inverse(np.array([-1e300, -50.0, 0.0, 50.0, 1e300]))
    assert np.all((wild >= lo) & (wild <= hi))


@SETTINGS
@given(col(floats(-1e6, 1e6)))
def test_standardize(x):
    t, y = roundtrip({"type": "standardize"}, x, atol=1e-6, rtol=1e-9)
    if len(x) > 1 and np.std(x) > 1e-3:
        assert abs(y.mean()) < 1e-6 and abs(y.std() - 1) < 1e-6


def _nonzero(lo, hi):
    return st.one_of(floats(lo, hi), floats(-hi, -lo))


@SETTINGS
@given(pair(floats(-1e6, 1e6), _nonzero(1e-3, 1e6)))
def test_ratio(xr):
    roundtrip({"type": "ratio", "reference": "g"}, *xr, rtol=1e-12, atol=1e-9)


@SETTINGS
@given(pair(floats(1e-6, 1e6), floats(1e-3, 1e6)))
def test_log_ratio(xr):
    roundtrip({"type": "log_ratio", "reference": "g"}, *xr, rtol=1e-12)


@SETTINGS
@given(pair(floats(15.001, 1e4), floats(1e-3, 1e6)))
def test_log_ratio_threshold_offset(xr):
    roundtrip({"type": "log_ratio", "reference": "g", "offset": -15.0}, *xr, rtol=1e-9)


def test_log_ratio_threshold_keeps_every_sample_above_it():
    t = transform_from_config({"type": "log_ratio", "reference": "g", "offset": -15.0})
    y = np.linspace(-20.0, 5.0, 101)  # any value the flow may draw, deep tail included
    assert (t.inverse(y, np.full_like(y, 12.0)) > 15.0).all()
    with pytest.raises(ValueError, match=r"x \+ offset > 0.*14\.0"):
        t.fit(np.array([20.0, 14.0]), np.array([18.0, 13.0]))


@SETTINGS
@given(pair(floats(-1e6, 1e6), floats(-1e6, 1e6)))
def test_difference(xr):
    roundtrip({"type": "difference", "reference": "g"}, *xr, atol=1e-9)


@SETTINGS
@given(pair(floats(-math.pi, math.pi, exclude_max=True), floats(-math.pi, math.pi, exclude_max=True)))
def test_phi_difference(xr):
    x, ref = xr
    t = transform_from_config({"type": "phi_difference", "reference": "g"}).fit(x, ref)
    y = t.forward(x, ref)
    assert np.all((y >= -math.pi) & (y < math.pi))
    back = t.inverse(y, ref)
    assert np.all((back >= -math.pi) & (back < math.pi))
    d = np.mod(back - x + math.pi, 2 * math.pi) - math.pi  # equal as angles
    assert np.all(np.abs(d) < 1e-12)
    back2 = _json(t).inverse(y, ref)
    np.testing.assert_array_equal(back2, back)


@SETTINGS
@given(col(st.integers(-1000, 1000).map(float)), st.integers(0, 2**32))
def test_dequantize(x, seed):
    t, y = roundtrip({"type": "dequantize"}, x, seed=seed)
    assert np.all((y >= x + 1e-3) & (y <= x + 1 - 1e-3))
    wild = t.inverse(np.array([-1e9, 1e9]))
    assert wild[0] == x.min() and wild[1] == x.max()  # clipped to the training range


@SETTINGS
@given(st.lists(st.integers(-100, 100), min_size=1, max_size=8, unique=True).flatmap(
    lambda vals: st.tuples(st.just(vals), col(st.sampled_from(vals).map(float)))), st.integers(0, 2**32),
    st.booleans())
def test_categorical(vals_x, seed, declared):
    vals, x = vals_x
    cfg = {"type": "categorical", "values": vals} if declared else {"type": "categorical"}
    t, y = roundtrip(cfg, x, seed=seed)
    k = np.searchsorted(np.asarray(t.classes), x)
    assert np.all((y >= k + 0.2) & (y <= k + 0.8))  # gaps between classes
    classes = set(map(float, vals)) if declared else set(map(float, x))
    wild = t.inverse(np.random.default_rng(seed).normal(0, 10, 200))
    assert set(wild.tolist()) <= classes


def test_categorical_bools_and_bitmask():
    x = np.array([True, False, True])
    t = Categorical(column="flag").fit(x)
    assert t.classes == [0.0, 1.0]
    bits = np.array([0, 1, 4, 5, 5, 1], dtype=np.uint8)
    t = Categorical(column="puId").fit(bits)
    assert t.classes == [0.0, 1.0, 4.0, 5.0]
    np.testing.assert_array_equal(t.inverse(t.forward(bits, None, np.random.default_rng(0))), bits)


@SETTINGS
@given(st.sampled_from(["auto", "below", "above", "both"]), N, st.integers(0, 2**32))
def test_spike(side, n, seed):
    rng = np.random.default_rng(seed)
    w = 1e-3
    if side in ("auto", "below"):  # spike at the lower edge (a fraction exactly 0), at the upper edge for auto
        cont = rng.uniform(0, 1, n)
        spikes = [0.0, 1.0] if side == "auto" else [0.0]
    elif side == "above":  # spike at the upper edge
        cont = rng.uniform(-1, 1, n)
        spikes = [1.0]
    else:  # interior spike, continuous values outside the band
        cont = rng.uniform(w, 1, n) * rng.choice([-1, 1], n)
        spikes = [0.0]
    x = np.where(rng.random(n) < 0.4, rng.choice(spikes, n), cont)
    t, y = roundtrip({"type": "spike", "values": spikes, "width": w, "side": side}, x, seed=seed)
    assert np.all(y[~np.isin(x, spikes)] == x[~np.isin(x, spikes)])  # continuous values untouched
    at = np.isin(x, spikes)
    assert np.all(np.abs(y[at] - x[at]) <= w)
    if side == "auto" and np.any((x > 0) & (x < 1)):
        assert t.sides == ["below", "above"]


def test_spike_snaps_model_leakage_into_an_empty_gap_to_the_nearer_spike():
    rng = np.random.default_rng(0)
    # a tagger: -1 outside the tracker, else a score in [0, 1] with spikes at 0 and 1
    x = np.concatenate([np.full(100, -1.0), np.zeros(50), np.ones(20), rng.uniform(0.01, 0.99, 300)])
    t = transform_from_config({"type": "spike", "values": [-1.0, 0.0, 1.0]}).fit(x)
    assert t.gaps == [[-1.0, 0.0]]
    back = t.inverse(np.array([-0.9, -0.6, -0.4, -0.01, 0.3, -1.0005]))
    np.testing.assert_array_equal(back, [-1.0, -1.0, 0.0, 0.0, 0.3, -1.0])
    old = t.to_dict()
    del old["state"]["gaps"]  # a unit trained before gaps were recorded still loads
    assert type(t).from_dict(old).gaps == []


@SETTINGS
@given(N, st.integers(0, 2**32))
def test_score_roundtrip_with_a_default(n, seed):
    rng = np.random.default_rng(seed)
    x = np.where(rng.random(n) < 0.3, -1.0, rng.uniform(1e-4, 1 - 1e-4, n))
    t, y = roundtrip({"type": "score", "default": -1.0, "quantile": 0.0}, x, rtol=1e-9, seed=seed)
    scores = x != -1
    if scores.any():  # the default band lies below every score's logit, with the configured gap
        assert np.all(y[~scores] < y[scores].min() - 0.5 * t.scale + 1e-9)


def test_score_resolves_small_scores_and_snaps_leakage_to_the_default():
    rng = np.random.default_rng(1)
    x = np.concatenate([np.full(500, -1.0), rng.uniform(0.004, 0.02, 9000), rng.uniform(0.5, 1, 500), [1e-6]])
    t = transform_from_config({"type": "score", "default": -1}).fit(x)
    y = t.forward(np.array([0.004, 0.005, 1e-6, -1.0, 1.0]))
    assert y[1] - y[0] > 0.2  # 0.004 and 0.005 stay well apart in model space (logit)
    assert y[2] == t.low and y[4] == t.high  # outliers beyond the fitted quantiles are clipped to them
    assert t.low - 2.5 * t.scale < y[3] < t.low - 0.5 * t.scale  # the default sits just below, within reach
    back = t.inverse(np.array([t.low - 0.2 * t.scale, t.low - 0.3 * t.scale, t.low - 3 * t.scale, 40.0]))
    np.testing.assert_allclose(back[:1], [1 / (1 + np.exp(-(t.low - 0.2 * t.scale)))])
    np.testing.assert_array_equal(back[1:3], [-1.0, -1.0])  # below the middle of the gap: the default
    assert back[3] <= 1.0


def test_score_rejects_values_outside_the_range_and_a_default_inside_it():
    t = transform_from_config({"type": "score", "default": -1.0}, column="btagDeepFlavB")
    with pytest.raises(ValueError, match=r"btagDeepFlavB.*outside \[0, 1\] or the default -1.0.*-0.5"):
        t.fit(np.array([0.2, -0.5]))
    with pytest.raises(ValueError, match="outside the score range"):
        transform_from_config({"type": "score", "default": 0.0})


@SETTINGS
@given(col(floats(-1e3, 1e3)))
def test_clamp(x):
    t, y = roundtrip({"type": "clamp"}, x)
    np.testing.assert_array_equal(y, x)
    back = t.inverse(np.array([-1e9, 1e9, np.nan]))
    np.testing.assert_array_equal(back, [x.min(), x.max(), x.min()])


def _fractions(draw_n, seed, k=5, zero_frac=0.3):
    rng = np.random.default_rng(seed)
    f = rng.dirichlet(np.ones(k + 1), draw_n)[:, :k]
    f[rng.random((draw_n, k)) < zero_frac] = 0.0  # exact zeros
    f[rng.random(draw_n) < 0.1] = np.eye(k)[rng.integers(0, k)]  # a single fraction exactly 1
    return f


@SETTINGS
@given(N, st.integers(0, 2**32))
def test_stick_breaking(n, seed):
    f = _fractions(n, seed)
    cols = [f"f{i}" for i in range(5)]
    sb = StickBreaking(cols)
    v = sb.forward(list(f.T), [])
    assert all(np.all((vi >= 0) & (vi <= 1)) for vi in v)
    back = np.stack(sb.inverse(v, []), 1)
    np.testing.assert_allclose(back, f, atol=1e-12)
    # any model output gives valid fractions: non-negative and summing to <= 1
    wild = np.stack(sb.inverse(list(np.random.default_rng(seed).normal(0.5, 2, (5, n))), []), 1)
    assert np.all(wild >= 0) and np.all(wild.sum(1) <= 1 + 1e-12)


def test_polar_residual_gives_the_xy_mismeasurement_and_inverts():
    rng = np.random.default_rng(3)
    n = 1000
    gen_pt, gen_phi = rng.exponential(30.0, n), rng.uniform(-np.pi, np.pi, n)
    pt, phi = rng.exponential(40.0, n), rng.uniform(-np.pi, np.pi, n)
    cfg = [{"columns": ["pt", "phi"], "steps": [{"type": "polar_residual", "reference": ["GenMET.pt", "GenMET.phi"]},
                                                 {"type": "standardize"}]}]
    refs = {"GenMET.pt": gen_pt, "GenMET.phi": gen_phi}
    p = TargetPipeline(cfg).fit({"pt": pt, "phi": phi}, refs)
    assert p.references == ["GenMET.phi", "GenMET.pt"]
    raw = PolarResidual(["pt", "phi"], reference=["a", "b"]).forward([pt, phi], [gen_pt, gen_phi])
    np.testing.assert_allclose(raw[0], pt * np.cos(phi) - gen_pt * np.cos(gen_phi))
    q = TargetPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    back = q.inverse(q.forward({"pt": pt, "phi": phi}, refs), refs)
    np.testing.assert_allclose(back["pt"], pt, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.cos(back["phi"] - phi), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\['pt', 'phi'\].*'polar_residual'.*reference column 'GenMET.pt' not given"):
        p.forward({"pt": pt, "phi": phi}, {"GenMET.phi": gen_phi})
    with pytest.raises(ValueError, match="polar_residual needs reference"):
        TargetPipeline([{"columns": ["pt", "phi"], "steps": [{"type": "polar_residual"}]}])


def _deepjet(n, rng):
    """B, CvB, CvL from three-class probabilities; a fifth of the jets without a score (-1)."""
    logits = np.column_stack([rng.normal(0, 2, (n, 2)), np.zeros(n)])  # log(b/udsg), log(c/udsg), 0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    b, c, udsg = p.T
    scores = [b, c / (c + b), c / (c + udsg)]
    none = rng.random(n) < 0.2
    return [np.where(none, -1.0, x).astype(np.float32) for x in scores]


def test_flavour_scores_model_cvb_and_cvl_and_give_back_b():
    rng = np.random.default_rng(5)
    b, cvb, cvl = _deepjet(5000, rng)
    names = ["btagDeepFlavB", "btagDeepFlavCvB", "btagDeepFlavCvL"]
    cfg = [{"columns": names, "steps": [{"type": "flavour_scores"}, {"type": "score", "default": -1.0, "quantile": 0.0},
                                        {"type": "standardize"}]}]
    p = TargetPipeline(cfg).fit(dict(zip(names, (b, cvb, cvl))))
    assert p.features == names[1:] and p.n_features == 2
    q = TargetPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    back = q.inverse(q.forward(dict(zip(names, (b, cvb, cvl)))))
    for name, x in zip(names, (b, cvb, cvl)):
        np.testing.assert_allclose(back[name], x, rtol=1e-5, atol=1e-6)
        assert back[name].dtype == np.float32
    # any model output gives consistent scores: all three at the default together, else B in [0, 1]
    wild = q.inverse(rng.normal(0, 3, (2000, 2)))
    none = wild[names[0]] == -1.0
    assert none.any() and np.all(wild[names[1]][none] == -1.0) and np.all(wild[names[2]][none] == -1.0)
    assert np.all((wild[names[0]][~none] >= 0) & (wild[names[0]][~none] <= 1))
    # scores that are not one tagger's class probabilities are refused, naming the column and row
    bad = b.copy()
    row = int(np.flatnonzero(b >= 0)[3])
    bad[row] = (bad[row] + 0.5) % 1.0
    with pytest.raises(ValueError, match=rf"'btagDeepFlavB'.*flavour_scores.*row {row}"):
        FlavourScores(names).forward([bad, cvb, cvl], [])
    half = cvb.copy()
    half[int(np.flatnonzero(b < 0)[0])] = 0.3
    with pytest.raises(ValueError, match=r"'btagDeepFlavCvB'.*default -1.0 where B has it"):
        FlavourScores(names).forward([b, half, cvl], [])
    with pytest.raises(ValueError, match="takes three columns"):
        FlavourScores(names[:2])


def _saved_round_trip(cfg: list, data: dict, atol: float) -> TargetPipeline:
    """The pipeline fitted on ``data``, saved and loaded again; it gives ``data`` back through forward and inverse."""
    p = TargetPipeline(cfg).fit(data)
    q = TargetPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    back = q.inverse(q.forward(data, rng=np.random.default_rng(0)))
    for name, x in data.items():
        np.testing.assert_allclose(back[name], x, rtol=1e-5, atol=atol)
    return q


def test_hypot_ratio_draws_ip3d_relative_to_dxy_and_dz():
    rng = np.random.default_rng(4)
    dxy, dz = rng.normal(0, 0.01, 3000).astype(np.float32), rng.normal(0, 0.02, 3000).astype(np.float32)
    ip3d = np.hypot(dxy, dz).astype(np.float32)  # one vector's components: the ratio is 1 up to float32 rounding
    cfg = [{"columns": ["dxy", "dz", "ip3d"], "steps": [{"type": "hypot_ratio"}, {"type": "spike", "values": [0.0], "width": 1e-9},
                                                        {"type": "asinh", "scale": 0.001}, {"type": "standardize"}]}]
    q = _saved_round_trip(cfg, {"dxy": dxy, "dz": dz, "ip3d": ip3d}, atol=1e-8)
    wild = q.inverse(rng.normal(0, 2, (2000, 3)))
    np.testing.assert_allclose(wild["ip3d"], np.hypot(wild["dxy"], wild["dz"]), rtol=1e-6)  # the spike band snaps to ratio 1
    # a length that differs from the hypotenuse is kept as a log-ratio
    apart = HypotRatio(["a", "b", "c"]).forward([np.array([3.0]), np.array([4.0]), np.array([10.0])], [])
    np.testing.assert_allclose(apart[2], np.log(2.0))
    with pytest.raises(ValueError, match=r"'c'.*hypot_ratio.*needs a length > 0.*row 1"):
        HypotRatio(["a", "b", "c"]).forward([np.ones(2), np.ones(2), np.array([1.0, 0.0])], [])


def test_excess_keeps_a_total_above_its_part():
    rng = np.random.default_rng(5)
    chg = np.where(rng.random(3000) < 0.5, 0.0, rng.exponential(0.1, 3000)).astype(np.float32)
    total = (chg + np.where(rng.random(3000) < 0.4, 0.0, rng.exponential(0.05, 3000))).astype(np.float32)
    cfg = [{"columns": ["chg", "all"], "steps": [{"type": "excess"}, {"type": "clamp"}, {"type": "spike", "values": [0.0]},
                                                 {"type": "log", "offset": 0.002}, {"type": "standardize"}]}]
    q = _saved_round_trip(cfg, {"chg": chg, "all": total}, atol=1e-7)
    wild = q.inverse(rng.normal(0, 2, (2000, 2)))
    assert np.all(wild["all"] >= wild["chg"]) and np.mean(wild["all"] == wild["chg"]) > 0.1  # the excess spike at 0
    with pytest.raises(ValueError, match=r"'all'.*excess.*needs 'all' >= 'chg'.*row 1"):
        Excess(["chg", "all"]).forward([np.array([0.1, 0.5]), np.array([0.2, 0.3])], [])
    with pytest.raises(ValueError, match="takes two columns"):
        Excess(["a"])


# -- pipelines ---------------------------------------------------------------------------

JET_CONFIG = [
    {"column": "pt", "steps": [{"type": "clamp"}, {"type": "log_ratio", "reference": "pt"}, {"type": "standardize"}]},
    {"column": "eta", "steps": [{"type": "difference", "reference": "eta"}, {"type": "standardize"}]},
    {"column": "phi", "steps": [{"type": "phi_difference", "reference": "phi"}, {"type": "standardize"}]},
    {"column": "jetId", "steps": [{"type": "categorical", "values": [0, 2, 6]}, {"type": "standardize"}]},
    {"column": "nConstituents", "steps": [{"type": "dequantize"}, {"type": "log"}, {"type": "standardize"}]},
    {"column": "btagDeepFlavB", "steps": [{"type": "spike", "values": [0.0, 1.0]},
                                          {"type": "logit", "lo": -0.001, "hi": 1.001}, {"type": "standardize"}]},
    {"column": "hasMuon", "steps": [{"type": "categorical"}]},
    {"columns": ["chHEF", "neHEF", "chEmEF", "neEmEF", "muEF"],
     "steps": [{"type": "stick_breaking"}, {"type": "spike", "values": [0.0, 1.0]},
               {"type": "logit", "lo": -0.001, "hi": 1.001}, {"type": "standardize"}]},
]
FRACTIONS = ["chHEF", "neHEF", "chEmEF", "neEmEF", "muEF"]


def _jets(n, seed):
    rng = np.random.default_rng(seed)
    gpt = rng.exponential(30, n) + 15
    refs = {"pt": gpt, "eta": rng.uniform(-4.7, 4.7, n), "phi": rng.uniform(-np.pi, np.pi, n)}
    btag = rng.uniform(0, 1, n)
    btag[rng.random(n) < 0.2] = 0.0
    btag[rng.random(n) < 0.1] = 1.0
    t = {
        "pt": (gpt * rng.lognormal(0, 0.15, n)).astype(np.float32),
        "eta": (refs["eta"] + rng.normal(0, 0.02, n)).astype(np.float32),
        "phi": np.mod(refs["phi"] + rng.normal(0, 0.02, n) + np.pi, 2 * np.pi).astype(np.float32) - np.float32(np.pi),
        "jetId": rng.choice([0, 2, 6], n).astype(np.int32),
        "nConstituents": rng.poisson(12, n).astype(np.uint8) + 1,
        "btagDeepFlavB": btag.astype(np.float32),
        "hasMuon": rng.random(n) < 0.3,
    }
    for i, c in enumerate(FRACTIONS):
        t[c] = _fractions(n, seed)[:, i].astype(np.float32)
    return t, refs


def _assert_columns_equal(back, t):
    for c, x in t.items():
        assert back[c].dtype == x.dtype, c
        if x.dtype.kind in "iub":
            np.testing.assert_array_equal(back[c], x, err_msg=c)
        elif c == "phi":
            d = np.mod(back[c].astype(np.float64) - x + np.pi, 2 * np.pi) - np.pi
            assert np.all(np.abs(d) < 1e-5), c
        else:
            np.testing.assert_allclose(back[c], x, atol=3e-6, rtol=1e-5, err_msg=c)


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 300), st.integers(0, 2**32))
def test_pipeline_roundtrip(n, seed):
    t, refs = _jets(n, seed)
    p = TargetPipeline(JET_CONFIG).fit(t, refs, np.random.default_rng(seed))
    assert p.features == ["pt", "eta", "phi", "jetId", "nConstituents", "btagDeepFlavB", "hasMuon", *FRACTIONS]
    assert p.references == ["eta", "phi", "pt"]
    a = p.forward(t, refs, np.random.default_rng(seed + 1))
    assert a.dtype == np.float32 and a.shape == (n, 12) and np.isfinite(a).all()
    _assert_columns_equal(p.inverse(a, refs), t)
    # JSON round trip: same forward with the same rng, same inverse
    p2 = TargetPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(p2.forward(t, refs, np.random.default_rng(seed + 1)), a)
    b1, b2 = p.inverse(a, refs), p2.inverse(a, refs)
    for c in t:
        np.testing.assert_array_equal(b1[c], b2[c])
    # arbitrary model output -> valid physics: allowed classes, fractions summing to <= 1
    wild = p.inverse(np.random.default_rng(seed).normal(0, 3, (n, 12)).astype(np.float32), refs)
    assert set(wild["jetId"].tolist()) <= {0, 2, 6}
    assert np.all(wild["chHEF"] >= 0)
    s = sum(wild[c].astype(np.float64) for c in FRACTIONS)
    assert np.all(s <= 1 + 1e-6)  # exact in float64, up to float32 rounding of the stored columns
    assert np.all((wild["btagDeepFlavB"] >= 0) & (wild["btagDeepFlavB"] <= 1))
    assert np.all(wild["pt"] >= t["pt"].min()) and np.all(wild["pt"] <= t["pt"].max())


def test_pipeline_standardises_on_training_data():
    t, refs = _jets(5000, 1)
    p = TargetPipeline(JET_CONFIG).fit(t, refs)
    a = p.forward(t, refs, np.random.default_rng(0))
    cols = [i for i, c in enumerate(p.features) if c != "hasMuon"]
    assert np.all(np.abs(a[:, cols].mean(0)) < 0.05) and np.all(np.abs(a[:, cols].std(0) - 1) < 0.05)


def test_context_pipeline():
    rng = np.random.default_rng(0)
    ctx = {"pt": rng.exponential(30, 1000) + 10, "eta": rng.normal(0, 2, 1000), "flavour": rng.choice([0, 4, 5], 1000)}
    p = ContextPipeline.standard(["pt", "eta"], log_columns=["pt"]).fit(ctx)
    a = p.forward(ctx)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a[:, 0], (np.log(ctx["pt"]) - np.log(ctx["pt"]).mean()) / np.log(ctx["pt"]).std(), atol=1e-5)
    q = ContextPipeline([{"column": "flavour", "steps": [{"type": "categorical"}]}]).fit(ctx)
    a1, a2 = q.forward(ctx, rng=np.random.default_rng(1)), q.forward(ctx)
    np.testing.assert_array_equal(a1, a2)  # no noise in the context
    assert set(a1[:, 0].tolist()) == {0.5, 1.5, 2.5}
    p2 = ContextPipeline.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(p2.forward(ctx), a)
    with pytest.raises(ValueError, match="not among the columns"):
        ContextPipeline.standard(["eta"], log_columns=["pt"])


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, data, refs, match",
    [
        ([{"column": "pt", "steps": [{"type": "log"}]}], {"pt": [1.0, -2.0]}, {}, r"'pt'.*log.*-2\.0 at row 1"),
        ([{"column": "pt", "steps": [{"type": "log_ratio", "reference": "pt"}]}], {"pt": [1.0, 0.0]}, {"pt": [1, 1]},
         r"'pt'.*x \+ offset > 0.*0\.0 at row 1"),
        ([{"column": "pt", "steps": [{"type": "log_ratio", "reference": "genpt"}]}], {"pt": [1.0]}, {},
         r"'pt'.*reference column 'genpt' not given"),
        ([{"column": "jetId", "steps": [{"type": "categorical", "values": [0, 2, 6]}]}], {"jetId": [0, 2, 4]}, {},
         r"'jetId'.*4\.0 at row 2"),
        ([{"column": "s", "steps": [{"type": "logit", "lo": 0, "hi": 1}]}], {"s": [0.5, 1.5]}, {}, r"'s'.*\[0\.0, 1\.0\].*1\.5"),
        ([{"column": "n", "steps": [{"type": "dequantize"}]}], {"n": [1.0, 2.5]}, {}, r"'n'.*integer.*2\.5"),
        ([{"column": "x", "steps": [{"type": "standardize"}]}], {"x": [1.0, np.nan]}, {}, r"'x'.*non-finite"),
        ([{"column": "x", "steps": []}], {"y": [1.0]}, {}, r"'x' missing"),
        ([{"columns": ["a", "b"], "steps": [{"type": "stick_breaking"}]}], {"a": [0.7], "b": [0.6]}, {},
         r"sum above 1"),
        ([{"columns": ["a", "b"], "steps": [{"type": "stick_breaking"}]}], {"a": [-0.1], "b": [0.6]}, {},
         r"'a'.*outside \[0, 1\]"),
    ],
)
def test_domain_errors_name_column_and_value(cfg, data, refs, match):
    data = {k: np.asarray(v) for k, v in data.items()}
    with pytest.raises(ValueError, match=match):
        TargetPipeline(cfg).fit(data, {k: np.asarray(v, dtype=float) for k, v in refs.items()})


@pytest.mark.parametrize(
    "cfg, match",
    [
        ([{"column": "pt", "steps": [{"type": "lgo"}]}], r"'pt'.*unknown step type 'lgo'"),
        ([{"column": "pt", "steps": [{"type": "log", "ofset": 1}]}], r"'pt'.*unknown option 'ofset'"),
        ([{"column": "s", "steps": [{"type": "logit"}]}], r"'s'.*needs option 'lo'"),
        ([{"column": "s", "steps": [{"type": "logit", "lo": 1, "hi": 0}]}], r"'s'.*hi > lo"),
        ([{"column": "pt", "steps": [{"type": "ratio"}]}], r"'pt'.*needs a 'reference'"),
        ([{"column": "pt", "steps": [{"type": "log", "reference": "pt"}]}], r"'pt'.*takes no 'reference'"),
        ([{"column": "pt"}, {"column": "pt"}], r"'pt' appears twice"),
        ([{"column": "pt", "colums": 1}], r"unknown key 'colums' \(did you mean 'columns'\?\)"),
        ([{"columns": ["a", "b"], "steps": [{"type": "log"}]}], r"must start with a multi-column step"),
        ([{"column": "a", "steps": [{"type": "stick_breaking"}]}], r"\['a'\].*'stick_breaking' must be the first step of a 'columns"),
        ([{"column": "j", "steps": [{"type": "categorical", "values": [1, 1]}]}], r"'j'.*duplicate"),
        ([{"column": "b", "steps": [{"type": "spike", "values": [0.0], "side": "left"}]}], r"'b'.*side"),
        ({"column": "pt"}, r"must be a list"),
        ([{"columns": ["a", "b"], "steps": [{"type": "stick_breaking", "tol": 1}]}], r"unknown option 'tol' for step 'stick_breaking'"),
    ],
)
def test_config_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        TargetPipeline(cfg)


def test_pipeline_guards():
    p = TargetPipeline([{"column": "x", "steps": [{"type": "standardize"}]}])
    with pytest.raises(ValueError, match="before fit"):
        p.forward({"x": np.ones(3)})
    p.fit({"x": np.arange(3.0)})
    with pytest.raises(ValueError, match=r"shape \(n, 1\)"):
        p.inverse(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="'x'.*non-finite"):
        p.inverse(np.array([[np.nan]]))
    q = TargetPipeline([{"column": "n", "steps": [{"type": "standardize"}]}]).fit({"n": np.array([1, 2], dtype=np.uint8)})
    with pytest.raises(ValueError, match="'n'.*does not fit uint8"):
        q.inverse(np.array([[1000.0]]))


_RNG = np.random.default_rng(5)
_POSITIVE = _RNG.uniform(0.5, 50.0, 200)
_UNIT = _RNG.uniform(0.01, 0.99, 200)
# one example per registered step: (options, column, reference, inverse tolerance); a new step needs one here
EXAMPLES = {
    "log": ({}, _POSITIVE, None, 1e-9),
    "log1p": ({}, _POSITIVE - 0.4, None, 1e-9),
    "asinh": ({"scale": 2.0, "offset": -1.0}, _POSITIVE - 25, None, 1e-9),
    "logit": ({"lo": 0.0, "hi": 1.0}, _UNIT, None, 1e-9),
    "standardize": ({}, _POSITIVE, None, 1e-9),
    "clamp": ({}, _POSITIVE, None, 0.0),
    "ratio": ({"reference": "g"}, _POSITIVE, _POSITIVE[::-1], 1e-9),
    "log_ratio": ({"offset": -0.1, "reference": "g"}, _POSITIVE, _POSITIVE[::-1], 1e-9),
    "difference": ({"reference": "g"}, _POSITIVE, _POSITIVE[::-1], 1e-9),
    "phi_difference": ({"reference": "g"}, _UNIT * 6 - 3, _UNIT[::-1] * 6 - 3, 1e-9),
    "dequantize": ({}, np.floor(_POSITIVE), None, 0.0),
    "categorical": ({"values": [0, 2, 6]}, _RNG.choice([0.0, 2.0, 6.0], 200), None, 0.0),
    "spike": ({"values": [0.0]}, np.where(_UNIT < 0.3, 0.0, _UNIT), None, 1e-9),
    "score": ({"default": -1.0, "spikes": [0, 1], "quantile": 0.0}, np.where(_UNIT < 0.2, -1.0, _UNIT), None, 1e-9),
    # its reference is the basis of its inputs: where the score is defined, a constant and one input column
    "logit_residual": ({"lo": -1.0, "hi": 1.0, "inputs": ["a"]}, _UNIT * 2 - 1, np.column_stack([np.ones(200), np.ones(200), _POSITIVE]), 1e-9),
    # its reference: the region and one input column
    "cut_level_residual": ({"levels": 2, "inputs": ["a"]}, _RNG.choice([0.0, 1.0, 2.0], 200), np.column_stack([np.zeros(200), _POSITIVE]), 0.0),
}


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_registered_transform_roundtrips_and_serialises(name):
    assert set(EXAMPLES) == set(TRANSFORMS.names()), "every registered step has an example here"
    options, x, ref, tol = EXAMPLES[name]
    roundtrip({"type": name, **options}, x, ref, atol=tol, rtol=tol)
    assert TRANSFORMS.get(name).__doc__, "a registered step says what it does"


@SETTINGS
@given(N, st.integers(0, 2**32))
def test_score_with_spikes_at_0_and_1_and_a_default(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 0.0, 1.0, 0.5], n, p=[0.2, 0.3, 0.1, 0.4])
    x = np.where(x == 0.5, rng.uniform(1e-3, 1 - 1e-3, n), x)
    t, y = roundtrip({"type": "score", "default": -1.0, "spikes": [0, 1], "quantile": 0.0}, x, rtol=1e-9, seed=seed)
    inner = (x > 0) & (x < 1)
    if inner.any():
        lo, hi = y[inner].min(), y[inner].max()
        assert np.all(y[x == 0] < lo) and np.all(y[x == 1] > hi)
    if (x == 0).any() and (x == -1).any():
        assert y[x == -1].max() < y[x == 0].min()  # the default lies beyond the spike at 0
    # a fraction that is 1 or 0 up to float rounding belongs to the spike
    np.testing.assert_array_equal(t.inverse(t.forward(np.array([1 - 1e-8, 3e-7]), rng=np.random.default_rng(0))), [1.0, 0.0])


def test_logit_residual_draws_what_the_inputs_leave_open():
    """A score that is a sigmoid of its inputs plus a little noise: the fit leaves a narrow residual, the inverse adds
    the fit of the (inverted) inputs back exactly, and the pipeline refuses inputs that are not earlier columns."""
    rng = np.random.default_rng(4)
    n = 4000
    r9, hoe = rng.uniform(0.3, 1.0, n), rng.exponential(0.05, n)
    eta = rng.uniform(-2.5, 2.5, n)
    logit = 3.0 * r9 - 20.0 * np.minimum(hoe, 0.2) + 0.8 * (np.abs(eta) < 1.479) + 0.05 * rng.normal(size=n)
    score = 2 / (1 + np.exp(-logit)) - 1
    config = [
        {"column": "r9", "steps": [{"type": "standardize"}]},
        {"column": "hoe", "steps": [{"type": "log", "offset": 0.001}, {"type": "standardize"}]},
        {"column": "eta", "steps": [{"type": "standardize"}]},
        {"column": "score", "steps": [{"type": "logit_residual", "lo": -1.001, "hi": 1.001,
                                       "inputs": ["r9", "minimum(hoe, 0.2)", "abs(eta) < 1.479"]},
                                      {"type": "standardize"}]},
    ]
    columns = {"r9": r9, "hoe": hoe, "eta": eta, "score": score}
    pipe = TargetPipeline(config).fit(columns)
    residual = pipe.groups[-1].chains[0][0].forward(score, pipe.groups[-1].chains[0][0].basis(columns, n))
    assert np.std(residual) < 0.06  # the 0.05 noise: the fit takes the rest
    assert pipe.groups[-1].chains[0][0].coefficients[1] == pytest.approx(3.0, abs=0.05)
    back = TargetPipeline.from_dict(json.loads(json.dumps(pipe.to_dict()))).inverse(pipe.forward(columns))
    assert np.allclose(back["score"], score, atol=1e-6)
    with pytest.raises(TransformError, match=r"column\(s\) \['score'\]: inputs \['r9x'\] are not columns of earlier target entries"):
        TargetPipeline([*config[:3], {"column": "score", "steps": [{**config[3]["steps"][0], "inputs": ["r9x"]}]}])
    with pytest.raises(TransformError, match=r"inputs \['score'\]"):
        TargetPipeline([{"column": "score", "steps": [{"type": "logit_residual", "lo": -1, "hi": 1, "inputs": ["score"]}]}])
    # a float32 score saturated at +-1 where the fit is beyond the bound counts as the fit; outside `where`: lo
    steep = 36.0 * r9 - 16.0 - 20.0 * np.minimum(hoe, 0.2) + 0.05 * rng.normal(size=n)  # float32 saturates above ~17
    steep_score = np.where(np.abs(eta) > 2.4, -1.0, (2 / (1 + np.exp(-steep)) - 1).astype(np.float32))
    saturated = {**columns, "score": steep_score}
    defined = [{**config[3]["steps"][0], "lo": -1.0, "hi": 1.0, "inputs": ["r9", "minimum(hoe, 0.2)"], "where": "abs(eta) <= 2.4"}]
    sat = TargetPipeline([*config[:3], {"column": "score", "steps": defined}]).fit(saturated)
    step = sat.groups[-1].chains[0][0]
    residual = step.forward(steep_score, step.basis(saturated, n))
    assert np.mean(steep_score == 1.0) > 0.03 and np.all(residual[np.abs(eta) > 2.4] == 0)
    assert np.abs(residual).max() < 0.5 and step.coefficients[1] == pytest.approx(36.0, rel=0.01)
    assert np.allclose(sat.inverse(sat.forward(saturated))["score"], steep_score, atol=1e-6)
    wrong_call = [*config[:3], {"column": "score", "steps": [{**config[3]["steps"][0], "inputs": ["minimum(hoe)"]}]}]
    with pytest.raises(TransformError, match=r"input 'minimum\(hoe\)' cannot be evaluated"):
        TargetPipeline(wrong_call).fit(columns)


def test_cut_level_residual_never_contradicts_the_drawn_variables():
    """A cut-based level from two drawn variables and a hidden one: the thresholds are learnt per region, the residual is
    the levels the hidden cut took off, and an inverted level never exceeds what the drawn variables pass."""
    rng = np.random.default_rng(7)
    n = 6000
    eta = rng.uniform(-2.5, 2.5, n)
    endcap = np.abs(eta) >= 1.479
    sieie = np.where(endcap, 0.03, 0.01) * rng.uniform(0.5, 1.5, n)
    hoe, hidden = rng.exponential(0.05, n), rng.exponential(1.0, n)
    table = {False: [(0.0125, 0.10, 3.0), (0.0110, 0.05, 1.0)], True: [(0.0400, 0.10, 3.0), (0.0330, 0.05, 1.0)]}
    passes = np.stack([np.where(endcap, *[(sieie < table[e][k][0]) & (hoe < table[e][k][1]) & (hidden < table[e][k][2])
                                          for e in (True, False)]) for k in range(2)], axis=1)
    level = np.cumprod(passes, axis=1).sum(axis=1).astype(float)
    config = [
        {"column": "eta", "steps": [{"type": "standardize"}]},
        {"column": "sieie", "steps": [{"type": "log"}, {"type": "standardize"}]},
        {"column": "hoe", "steps": [{"type": "log"}, {"type": "standardize"}]},
        {"column": "cutBased", "steps": [{"type": "cut_level_residual", "levels": 2, "inputs": ["sieie", "hoe"], "by": "abs(eta) >= 1.479"},
                                         {"type": "categorical", "values": [0, 1, 2]}, {"type": "standardize"}]},
    ]
    columns = {"eta": eta, "sieie": sieie, "hoe": hoe, "cutBased": level}
    pipe = TargetPipeline(config).fit(columns)
    step = pipe.groups[-1].chains[0][0]
    assert step.regions == [0.0, 1.0]
    np.testing.assert_allclose(np.array(step.thresholds)[:, :, 0], [[0.0125, 0.0110], [0.0400, 0.0330]], rtol=0.02)
    residual = step.forward(level, step.basis(columns, n))
    visible = hidden < 1.0  # where the hidden cut never binds, the drawn variables give the level exactly
    assert np.all(residual[visible] == 0) and residual[~visible].mean() > 0.3
    back = TargetPipeline.from_dict(json.loads(json.dumps(pipe.to_dict()))).inverse(pipe.forward(columns, rng=np.random.default_rng(1)))
    np.testing.assert_array_equal(back["cutBased"], level)
    # levels inverted for other drawn variables stay within what those pass
    other = {**columns, "sieie": sieie * 1.2, "hoe": hoe * 0.5}
    inverted = step.inverse(residual, step.basis(other, n))
    assert np.all(inverted <= step.bound(step.basis(other, n))) and np.all(inverted >= 0)
    with pytest.raises(TransformError, match=r"a level must be an integer in \[0, 2\]: 3.0"):
        step.forward(np.full(n, 3.0), step.basis(columns, n))
    with pytest.raises(TransformError, match=r"'levels' must be a positive integer, got 0"):
        TargetPipeline([*config[:3], {"column": "cutBased", "steps": [{**config[3]["steps"][0], "levels": 0}]}])
    with pytest.raises(TransformError, match=r"inputs \['sieiex'\] are not columns of earlier target entries"):
        TargetPipeline([*config[:3], {"column": "cutBased", "steps": [{**config[3]["steps"][0], "inputs": ["sieiex", "hoe"]}]}])
