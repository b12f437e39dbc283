"""Model types: they learn a known conditional law, sample reproducibly, never emit NaN, round-trip to disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flashsim.errors import ConfigError
from flashsim.models import (
    MODELS,
    ConditionalModel,
    EfficiencyModel,
    SamplingError,
    build_model,
    load_model,
    save_model,
)

torch.set_num_threads(1)

FLOW_CFG = {"layers": 3, "hidden": 32, "blocks": 1, "bins": 8}
SMALL = {
    "maf_rqs": {"type": "maf_rqs", **FLOW_CFG},
    "coupling_rqs": {"type": "coupling_rqs", **FLOW_CFG},
    "coupling_rqs_lu": {"type": "coupling_rqs", "mixing": "lu", **FLOW_CFG},
    "mean_quantile": {"type": "mean_quantile", "hidden": 64, "layers": 3},
}
X_TEST = (0.2, 0.5, 0.8)
QUANTILES = (0.1, 0.5, 0.9)


def _gamma_law(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """y1 | x ~ Gamma(shape 2 + 3x, scale 0.5 + x) (skewed); y2 = y1 / 2 + N(0, 0.3 + 0.5x) (correlated)."""
    k, theta = 2 + 3 * x, 0.5 + x
    y1 = torch.from_numpy(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g))).gamma(k.numpy(), theta.numpy())).float()
    y2 = 0.5 * y1 + (0.3 + 0.5 * x) * torch.randn(x.shape, generator=g)
    return torch.stack([y1, y2], 1)


def _gauss_law(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Heteroscedastic Gaussian: y_j | x ~ N(mu_j(x), sigma_j(x)), independent."""
    mu = torch.stack([torch.sin(3 * x) + x, 1 - 2 * x], 1)
    sigma = torch.stack([0.1 + 0.3 * x, 0.4 - 0.2 * x], 1)
    return mu + sigma * torch.randn(mu.shape, generator=g)


SHIFT, SCALE = torch.tensor([3.5, 1.75]), torch.tensor([2.2, 1.3])  # ~standardise the gamma law


def _ctx(x: torch.Tensor) -> torch.Tensor:
    return (x * 2 - 1)[:, None]


def _train(model, law, steps, scale=(0.0, 1.0), lr=3e-3, batch=512, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        x = torch.rand(batch, generator=g)
        y = (law(x, g) - scale[0]) / scale[1]
        loss = model.loss(y, _ctx(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model


def _compare(model, law, scale=(0.0, 1.0), n=20000, std_tol=0.12, q_tol=0.12, corr_tol=None):
    g = torch.Generator().manual_seed(123)
    for x0 in X_TEST:
        s = model.sample(_ctx(torch.full((n,), x0)), g) * scale[1] + scale[0]
        t = law(torch.full((200000,), x0), g)
        assert torch.isfinite(s).all()
        for j in range(t.shape[1]):
            sj, tj = s[:, j].numpy().astype(np.float64), t[:, j].numpy().astype(np.float64)
            sd = tj.std()
            msg = f"x={x0} target {j}"
            assert abs(sj.mean() - tj.mean()) < 0.1 * sd, f"{msg}: mean {sj.mean():.3f} vs {tj.mean():.3f}"
            assert abs(sj.std() / sd - 1) < std_tol, f"{msg}: std {sj.std():.3f} vs {sd:.3f}"
            qs, qt = np.quantile(sj, QUANTILES), np.quantile(tj, QUANTILES)
            assert np.all(np.abs(qs - qt) < q_tol * sd), f"{msg}: quantiles {qs} vs {qt}"
        if corr_tol is not None:
            cs, ct = np.corrcoef(s.numpy().T)[0, 1], np.corrcoef(t.numpy().T)[0, 1]
            assert abs(cs - ct) < corr_tol, f"x={x0}: corr {cs:.3f} vs {ct:.3f}"


@pytest.mark.parametrize("kind", ["maf_rqs", "coupling_rqs", "coupling_rqs_lu"])
def test_flow_learns_skewed_correlated_law(kind):
    model = _train(build_model(SMALL[kind], 2, 1), _gamma_law, steps=500, scale=(SHIFT, SCALE))
    _compare(model, _gamma_law, scale=(SHIFT, SCALE), corr_tol=0.05)


def test_mean_quantile_learns_heteroscedastic_gaussian():
    model = _train(build_model(SMALL["mean_quantile"], 2, 1), _gauss_law, steps=1000, lr=3e-3)
    _compare(model, _gauss_law)


def test_untrained_model_fails_the_comparison():
    """The statistical checks are strict enough to catch a model that has not learnt the law."""
    model = build_model(SMALL["maf_rqs"], 2, 1)
    with pytest.raises(AssertionError):
        _compare(model, _gamma_law, scale=(SHIFT, SCALE), corr_tol=0.05)


@pytest.mark.parametrize("kind", sorted(SMALL))
@pytest.mark.parametrize("d", [1, 3])
def test_seeded_sampling(kind, d):
    torch.manual_seed(0)
    model = build_model(SMALL[kind], d, 2)
    ctx = torch.randn(257, 2)
    a = model.sample(ctx, torch.Generator().manual_seed(7))
    b = model.sample(ctx, torch.Generator().manual_seed(7))
    c = model.sample(ctx, torch.Generator().manual_seed(8))
    assert a.shape == (257, d) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.isfinite(model.loss(a, ctx))


def test_sample_rejects_wrong_context_shape():
    model = build_model(SMALL["maf_rqs"], 2, 3)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        model.sample(torch.zeros(4, 2), torch.Generator())


@pytest.mark.parametrize("kind", ["maf_rqs", "coupling_rqs"])
def test_redraw_guard_replaces_nan_rows(kind, monkeypatch):
    from flashsim.models import flows

    model = build_model(SMALL[kind], 2, 1)
    original = flows.sample_inverse
    calls = []

    def flaky(transform, noise, context, dtype):
        out = original(transform, noise, context, dtype)
        calls.append(noise.shape[0])
        if len(calls) == 1:  # first draw: poison every 7th row with NaN / inf
            out = out.clone()
            out[::7, 0] = float("nan")
            out[3::7, 1] = float("inf")
        return out

    monkeypatch.setattr(flows, "sample_inverse", flaky)
    ctx = torch.rand(100, 1)
    s = model.sample(ctx, torch.Generator().manual_seed(0))
    assert torch.isfinite(s).all()
    assert calls[0] == 100 and calls[1] == len(range(0, 100, 7)) + len(range(3, 100, 7))


def test_redraw_guard_splits_on_assertion_error(monkeypatch):
    from flashsim.models import flows

    model = build_model(SMALL["maf_rqs"], 2, 1)
    original = flows.sample_inverse
    sizes = []

    def fragile(transform, noise, context, dtype):
        sizes.append(noise.shape[0])
        if noise.shape[0] > 16:  # the spline's "discriminant >= 0" assertion on big batches
            raise AssertionError
        return original(transform, noise, context, dtype)

    monkeypatch.setattr(flows, "sample_inverse", fragile)
    s = model.sample(torch.rand(100, 1), torch.Generator().manual_seed(0))
    assert s.shape == (100, 2) and torch.isfinite(s).all()
    assert max(sizes[1:]) <= 50


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_redraw_guard_gives_up_with_sampling_error(kind, monkeypatch):
    model = build_model({**SMALL[kind], "name": "jet_unit", "max_redraws": 3}, 2, 1)
    original = model._draw

    def always_bad(context, noise, draw):
        out = original(context, noise, draw).clone()
        out[0] = float("nan")
        return out

    monkeypatch.setattr(model, "_draw", always_bad)
    with pytest.raises(SamplingError, match=r"jet_unit.*1 of .* after 3 redraws"):
        model.sample(torch.rand(10, 1), torch.Generator())


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_save_load_roundtrip(kind, tmp_path):
    model = build_model(SMALL[kind], 3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):  # a few steps so that the weights are not the initial ones
        ctx = torch.randn(64, 2)
        loss = model.loss(torch.randn(64, 3) + ctx[:, :1], ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(isinstance(v, torch.Tensor) for v in model.state_dict().values())
    json.dumps(model.config)
    weights, meta = save_model(model, tmp_path / "unit" / "model")
    assert weights.name == "model.safetensors" and meta.name == "model.json"
    for path in (tmp_path / "unit" / "model", weights, meta):
        loaded = load_model(path)
        assert type(loaded) is type(model) and loaded.config == model.config
        ctx = torch.randn(300, 2)
        a = model.sample(ctx, torch.Generator().manual_seed(3))
        b = loaded.sample(ctx, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_load_errors_name_the_file(tmp_path):
    model = build_model(SMALL["coupling_rqs"], 2, 1)
    weights, meta = save_model(model, tmp_path / "m")
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(ValueError, match=r"m\.safetensors"):
        load_model(tmp_path / "m")
    weights.write_bytes(b"\x00garbage" * 10)  # corrupted
    with pytest.raises(ValueError, match=r"m\.safetensors"):
        load_model(tmp_path / "m")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.safetensors"):
        load_model(tmp_path / "m")
    save_model(model, tmp_path / "m")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.json"):
        load_model(tmp_path / "m")
    # weights from a different architecture
    save_model(model, tmp_path / "m")
    other = build_model({**SMALL["coupling_rqs"], "hidden": 16}, 2, 1)
    save_model(other, tmp_path / "o")
    (tmp_path / "o.json").write_text(meta.read_text())
    with pytest.raises(ValueError, match=r"o\.safetensors"):
        load_model(tmp_path / "o")


def test_build_model_config_errors():
    with pytest.raises(ValueError, match="unknown model type 'gan'"):
        build_model({"type": "gan"}, 2, 1)
    with pytest.raises(ValueError, match="needs a 'type'"):
        build_model({"layers": 2}, 2, 1)
    with pytest.raises(ValueError, match=r"unknown option 'hiden' \(did you mean 'hidden'\?\)"):
        build_model({"type": "maf_rqs", "hiden": 3}, 2, 1)
    with pytest.raises(ValueError, match="mixing must be 'permutation' or 'lu', got 'rotation'"):
        build_model({"type": "coupling_rqs", "mixing": "rotation"}, 2, 1)
    assert {"maf_rqs", "coupling_rqs", "mean_quantile", "efficiency"} <= set(MODELS)
    m = build_model({"type": "maf_rqs"}, 4, 2)
    assert isinstance(m, ConditionalModel) and m.config["tail_bound"] == 6.0 and m.config["batch_norm"] is False


def test_efficiency_recovers_known_probability(tmp_path):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def p_true(x):
        return 0.15 + 0.8 * x**2

    model = build_model({"type": "efficiency", "hidden": 32, "layers": 2, "name": "muon_eff"}, 1, 1)
    assert isinstance(model, EfficiencyModel)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        x = torch.rand(512, generator=g)
        y = (torch.rand(512, generator=g) < p_true(x)).float()
        loss = model.loss(y, _ctx(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    xv = torch.rand(20000, generator=g)
    yv = torch.rand(20000, generator=g) < p_true(xv)
    a, b = model.calibrate(_ctx(xv), yv)
    assert np.isfinite([a, b]).all()
    grid = torch.linspace(0.05, 0.95, 10)
    p = model.probability(_ctx(grid))
    assert torch.max(torch.abs(p - p_true(grid))) < 0.05, (p, p_true(grid))
    # sampled decisions follow p
    for x0 in (0.2, 0.8):
        d = model.sample(_ctx(torch.full((20000,), x0)), torch.Generator().manual_seed(1))
        assert d.dtype == torch.bool
        assert abs(d.float().mean().item() - p_true(torch.tensor(x0)).item()) < 0.03
    # calibration parameters travel with the weights
    save_model(model, tmp_path / "eff")
    loaded = load_model(tmp_path / "eff")
    assert torch.equal(loaded.probability(_ctx(grid)), p)
    ctx = _ctx(torch.rand(1000))
    assert torch.equal(model.sample(ctx, torch.Generator().manual_seed(5)),
                       loaded.sample(ctx, torch.Generator().manual_seed(5)))


def test_efficiency_calibration_fixes_miscalibrated_logits():
    """Platt scaling undoes a deliberately overconfident network (logits x 3)."""
    torch.manual_seed(1)
    model = EfficiencyModel({"hidden": 8, "layers": 1}, 1, 1)
    with torch.no_grad():  # make the raw network output 3 * true logit of p(x) = sigmoid(2x)
        model.net[0].weight.fill_(0.0)
        model.net[0].bias.fill_(0.0)
        model.net[0].weight[0, 0] = 1.0
        model.net[0].bias[0] = 5.0
        model.net[2].weight.fill_(0.0)
        model.net[2].weight[0, 0] = 6.0
        model.net[2].bias.fill_(-30.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50000, 1, generator=g)
    y = torch.rand(50000, generator=g) < torch.sigmoid(2 * x[:, 0])
    before = model.probability(x)
    a, b = model.calibrate(x, y)
    after = model.probability(x)
    truth = torch.sigmoid(2 * x[:, 0])
    assert (before - truth).abs().max() > 0.2
    assert (after - truth).abs().max() < 0.03
    assert abs(a - 1 / 3) < 0.05 and abs(b) < 0.1


def _random_flow(mixing: str, n_context: int) -> ConditionalModel:
    """A small coupling flow in eval mode (the sampling path's fast layers) with random weights far from the identity."""
    torch.manual_seed(0)
    model = build_model({"type": "coupling_rqs", "layers": 4, "hidden": 16, "blocks": 1, "bins": 6, "tail_bound": 3.0,
                         "mixing": mixing}, 5, n_context).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(("mixing", "n_context"), [("permutation", 3), ("lu", 3), ("lu", 0)])
def test_the_sampling_inverse_equals_nflows_inverse(mixing, n_context):
    from flashsim.models.spline_inverse import sample_inverse

    model = _random_flow(mixing, n_context)
    with torch.no_grad():
        context = torch.randn(4000, 3) if n_context else None
        noise = 2.5 * torch.randn(4000, 5)  # many rows beyond the tail bound of 3
        expected, _ = model.flow._transform.inverse(noise, context=context)
        got = sample_inverse(model.flow._transform, noise, context)
    assert (noise.abs() > 3).any(dim=1).sum() > 100
    # float rounding, magnified where a bin is narrow in y (as for the trained flow below)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)
    assert float(((got - expected).abs() > 1e-5).float().mean()) < 0.01


@pytest.mark.parametrize(("mixing", "n_context"), [("permutation", 3), ("lu", 3), ("lu", 0)])
def test_bfloat16_conditioners_follow_float32(mixing, n_context):
    """bfloat16 keeps 8 significant bits (0.4 % rounding of every weight and activation); the spline's inverse
    magnifies them where a bin is narrow in y: half the values move by < 0.01, 99 % by < 0.2 (in units of the
    base noise, for these random weights); all stay finite and float32. Under torch.autocast the float32 path
    gives the same values (only the conditioners' matrix products go to bfloat16 there too)."""
    from flashsim.models.spline_inverse import sample_inverse

    model = _random_flow(mixing, n_context)
    context = torch.randn(4000, 3) if n_context else None
    noise = 2.5 * torch.randn(4000, 5)
    with torch.no_grad():
        single = sample_inverse(model.flow._transform, noise, context)
        half = sample_inverse(model.flow._transform, noise, context, torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = sample_inverse(model.flow._transform, noise, context)
    difference = (half - single).abs()
    assert half.dtype == torch.float32 and bool(torch.isfinite(half).all())
    assert float(difference.median()) < 1e-2 and float(difference.quantile(0.99)) < 0.2
    assert float((difference > 0).float().mean()) > 0.5  # it did run in bfloat16
    torch.testing.assert_close(autocast, half, rtol=0, atol=1e-6)


def test_model_samples_in_its_precision():
    """A model's ``precision`` reaches its sampling path (same noise, bfloat16-close values); a name not in
    PRECISIONS is a ConfigError naming it."""
    model = _random_flow("lu", 3)
    context = torch.randn(500, 3)
    single = model.sample(context, torch.Generator().manual_seed(1))
    model.precision = "bfloat16"
    half = model.sample(context, torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(half).all()) and not torch.equal(half, single)
    assert float((half - single).abs().median()) < 1e-2
    model.precision = "float16"
    with pytest.raises(ConfigError, match="'float16'.*'float32', 'bfloat16'"):
        model.sample(context, torch.Generator())


def test_the_sampling_inverse_of_a_trained_flow_equals_nflows_inverse(monkeypatch):
    """The zoo's jet flow (trained: some bins are narrow in y, where the inverse is steep and magnifies float
    rounding) against nflows' inverse in float64: nearly every value agrees to 1e-5, all to 1e-3, and no worse than
    nflows' own float32 inverse does (whose largest error there is ~2e-3); the rows' split into CPU blocks does not
    change them."""
    import copy

    from flashsim.models import spline_inverse
    from flashsim.unit import load_unit

    model = load_unit("jet").trained_model()
    flow = model.flow
    generator = torch.Generator().manual_seed(3)
    context = torch.randn(5000, model.n_context, generator=generator)
    noise = 1.5 * torch.randn(5000, model.n_targets, generator=generator)
    assert spline_inverse.CPU_BLOCK * torch.get_num_threads() < 5000
    with torch.no_grad():
        got = spline_inverse.sample_inverse(flow._transform, noise, context)
        nflows32, _ = flow._transform.inverse(noise, context=context)
        exact, _ = copy.deepcopy(flow._transform).double().inverse(noise.double(), context=context.double())
        monkeypatch.setattr(spline_inverse, "CPU_BLOCK", 10**9)
        whole = spline_inverse.sample_inverse(flow._transform, noise, context)
    error = (got.double() - exact).abs()
    assert float(error.max()) < 1e-3 and float(error.max()) <= float((nflows32.double() - exact).abs().max())
    assert float((error > 1e-5).float().mean()) < 0.01
    torch.testing.assert_close(whole, got, rtol=1e-5, atol=1e-5)
