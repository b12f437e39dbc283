"""The W+jet analysis-specific units on held-out events: the mean + quantile regressor of Chen et
al. (2021) beside a conditional flow on the same 9 features.

    python benchmarks/bench_wjet.py                                   # held-out 20 % test split of the training file
    python benchmarks/bench_wjet.py --test data/refsim/test_wjets.root --report out/wjet_report

Events: those passing the units' GEN selection with a matched reco muon and jet (the 10 % muon
cut is for training only). For each unit it prints, per feature (muon px, py, pz; jet px, py, pz,
log M; MET x, y) and per auxiliary quantity (pT, eta, phi of muon and jet, MET, phi_MET, M_T, S_T,
M_j): the noise-floor ratio R = W1(flash, ref_B) / W1(ref_A, ref_B) over 8 event splits; the
relative residuals (x - x_gen) / x_gen of flash and reference (noise-floor ratio of their
distributions and their 16-84 % half widths); the classifier two-sample AUC on the 9 reco
features and on (gen, reco) beside the same test between the two reference halves; inference
speed on CPU (one thread) beside the paper's 100 s per 100k events; the training wall time.
With ensemble members (``flashsim/zoo/<unit>/member_<k>``), their R spread and the bin-by-bin ensemble
spread are shown too; ``--report`` writes flashsim's HTML validation with the ensemble band.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from flashsim.datasets import extract, load_dataset, split_by_event
from flashsim.event_outputs import build_collections
from flashsim.io import open_source, read_events
from flashsim.events import from_branches
from flashsim.recipe import load_recipe
from flashsim.unit import Unit, load_unit, resolve_unit_dir
from flashsim.validate import classifier_two_sample_test, noise_floor_ratio
from flashsim.validate.metrics import ensemble_band, event_splits

FEATURES = ["mu_px", "mu_py", "mu_pz", "jet_px", "jet_py", "jet_pz", "jet_logm", "met_px", "met_py"]
AUX = ["mu_pt", "mu_eta", "mu_phi", "jet_pt", "jet_eta", "jet_phi", "met", "met_phi", "mt", "st", "jet_mass"]
PAPER_EVENTS_PER_S = 100_000 / 100.0  # "Model inference on a CPU requires 100 s to run on 100,000 events"


# ---- the quantities ------------------------------------------------------------------------------


def quantities(px, py, pz, mass, jpx, jpy, jpz, mex, mey) -> dict[str, np.ndarray]:
    """The 9 features and the auxiliary quantities of the paper from Cartesian momenta."""
    f = {k: np.asarray(v, np.float64) for k, v in dict(mu_px=px, mu_py=py, mu_pz=pz, jet_px=jpx, jet_py=jpy, jet_pz=jpz,
                                                          jet_mass=mass, met_px=mex, met_py=mey).items()}
    out = {k: f[k] for k in FEATURES if k in f}
    out["jet_logm"] = np.log(np.maximum(f["jet_mass"], 1e-3))
    mu_pt, jet_pt, met = np.hypot(f["mu_px"], f["mu_py"]), np.hypot(f["jet_px"], f["jet_py"]), np.hypot(f["met_px"], f["met_py"])
    out |= {
        "mu_pt": mu_pt, "mu_eta": np.arcsinh(f["mu_pz"] / mu_pt), "mu_phi": np.arctan2(f["mu_py"], f["mu_px"]),
        "jet_pt": jet_pt, "jet_eta": np.arcsinh(f["jet_pz"] / jet_pt), "jet_phi": np.arctan2(f["jet_py"], f["jet_px"]),
        "met": met, "met_phi": np.arctan2(f["met_py"], f["met_px"]),
        "mt": np.sqrt(np.maximum((mu_pt + met) ** 2 - (f["mu_px"] + f["met_px"]) ** 2 - (f["mu_py"] + f["met_py"]) ** 2, 0.0)),
        "st": met + mu_pt + jet_pt, "jet_mass": f["jet_mass"],
    }
    return out


def from_columns(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return quantities(c["mu_px"], c["mu_py"], c["mu_pz"], c["jet_mass"], c["jet_px"], c["jet_py"], c["jet_pz"], c["met_px"], c["met_py"])


def from_output(events: ak.Array) -> dict[str, np.ndarray]:
    """The quantities from the written NanoAOD collections (one-entry Muon, Jet; MET)."""
    mu, jet, met = events.Muon[:, 0], events.Jet[:, 0], events.MET
    n = lambda x: ak.to_numpy(x).astype(np.float64)  # noqa: E731
    return quantities(n(mu.pt) * np.cos(n(mu.phi)), n(mu.pt) * np.sin(n(mu.phi)), n(mu.pt) * np.sinh(n(mu.eta)), n(jet.mass),
                      n(jet.pt) * np.cos(n(jet.phi)), n(jet.pt) * np.sin(n(jet.phi)), n(jet.pt) * np.sinh(n(jet.eta)),
                      n(met.pt) * np.cos(n(met.phi)), n(met.pt) * np.sin(n(met.phi)))


# ---- held-out events -----------------------------------------------------------------------------


def test_split_events(unit_name: str) -> ak.Array:
    """The recipe's held-out ``split.test`` events of its training files (the paper's 80/20 split)."""
    recipe = load_recipe(unit_name)
    unit = load_unit(resolve_unit_dir(recipe.unit), require_trained=False)
    cache = Path(recipe.data.dataset) if recipe.data.dataset else None
    dataset = load_dataset(cache) if cache and cache.is_file() else extract(unit, recipe.data.inputs, hash_sources=False)
    validation, test = recipe.split.validation, recipe.split.test
    if test <= 0:
        raise SystemExit(f"recipe {unit_name} has no [split] test fraction; give --test FILE")
    fractions = [(1 - test) * (1 - validation), (1 - test) * validation, test]
    held = np.unique(dataset.columns["event_id"][split_by_event(dataset.columns["event_id"], fractions, recipe.split.seed)[2]])
    paths = [Path(s["path"]) for s in dataset.report.sources]
    parts = []
    for file_index, path in enumerate(paths):
        entries = held[(held >> 40) == file_index] & ((1 << 40) - 1)
        if len(entries):
            source = open_source(path)
            events = from_branches(source.read(source.select(), 0, source.num_entries))
            parts.append(events[entries])
    return ak.concatenate(parts) if len(parts) > 1 else parts[0]


def reference(unit: Unit, events: ak.Array) -> tuple[ak.Array, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Selected events with a matched reco muon and jet; their reco and gen quantities."""
    events = events[unit.event_mask(events)]
    reco = {k: ak.to_numpy(v).astype(np.float64) for k, v in unit.target_values(events).items()}
    matched = np.logical_and.reduce([np.isfinite(v) for v in reco.values()])
    events = events[matched]
    reco = {k: v[matched] for k, v in reco.items()}
    gen = {k: ak.to_numpy(v).astype(np.float64) for k, v in unit.context_columns(events, None).items()}
    return events, from_columns(reco), from_columns(gen)


# ---- metrics ------------------------------------------------------------------------------------


def relative_residual(x: np.ndarray, gen: np.ndarray, name: str) -> np.ndarray:
    if name.endswith(("_phi", "met_phi")):
        return ((x - gen + np.pi) % (2 * np.pi) - np.pi) / np.where(np.abs(gen) > 1e-3, np.abs(gen), 1e-3)
    return (x - gen) / np.where(np.abs(gen) > 1e-3, gen, 1e-3)


def half_width(x: np.ndarray) -> float:
    lo, hi = np.quantile(x, [0.16, 0.84])
    return float(hi - lo) / 2


def compare(flash: dict, ref: dict, gen: dict, names: list[str], seed: int) -> dict[str, dict]:
    out = {}
    for k in names:
        rf, rr = relative_residual(flash[k], gen[k], k), relative_residual(ref[k], gen[k], k)
        out[k] = {"R": noise_floor_ratio(flash[k], ref[k], seed=seed).ratio,
                  "R_residual": noise_floor_ratio(rf, rr, seed=seed).ratio,
                  "width_flash": half_width(rf), "width_ref": half_width(rr),
                  "median_flash": float(np.median(rf)), "median_ref": float(np.median(rr))}
    return out


def auc_tests(flash: dict, ref: dict, gen: dict, seed: int) -> dict[str, dict]:
    n = len(ref[FEATURES[0]])
    split = event_splits(n, n, paired=True, n_splits=1, seed=seed)[0]
    idx = np.arange(n)
    fx, rx, gx = (np.stack([d[k] for k in FEATURES], 1) for d in (flash, ref, gen))
    return {"reco": classifier_two_sample_test(fx, idx, rx, idx, split, seed=seed),
            "gen+reco": classifier_two_sample_test(np.hstack([gx, fx]), idx, np.hstack([gx, rx]), idx, split, seed=seed)}


def speed(unit: Unit, events: ak.Array, repeat: int = 3) -> dict[str, float]:
    """Events/s of the whole unit (selection, features, sampling, output mapping) and of the model alone."""
    unit.run(events[:200], seed=0)  # warm-up
    best = min(_timed(lambda: unit.run(events, seed=1)) for _ in range(repeat))
    ctx = torch.as_tensor(unit._context_array(unit.context_columns(events[unit.event_mask(events)], None)))
    ctx = ctx[torch.arange(100_000) % len(ctx)]
    gen = torch.Generator().manual_seed(0)
    model_best = min(_timed(lambda: unit.model.sample(ctx, gen)) for _ in range(repeat))
    n_selected = int(unit.event_mask(events).sum())
    return {"unit_input_events_per_s": len(events) / best, "unit_selected_events_per_s": n_selected / best,
            "model_events_per_s": len(ctx) / model_best}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_time(unit_dir: Path) -> dict:
    record = json.loads((unit_dir / "training.json").read_text())
    hist = record["model"]["history"]
    return {"wall_s": record.get("wall_time_s"), "epochs": record["model"]["epochs_run"], "best_val": record["model"]["best_val"],
            "best_epoch": int(np.argmin(hist["val"])) + 1}


# ---- main ---------------------------------------------------------------------------------------


def _row(name: str, m: dict) -> str:
    return (f"  {name:<10} {m['R']:7.2f} {m['R_residual']:8.2f}   {m['median_flash']:+8.4f} {m['median_ref']:+8.4f}"
            f"   {m['width_flash']:8.4f} {m['width_ref']:8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", help="held-out GEN+RECO file (default: the regressor recipe's test split of its training files)")
    parser.add_argument("--units", default="wjet_regressor,wjet_flow")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--report", help="write flashsim's HTML validation (with the ensemble band) of the first unit here")
    parser.add_argument("--speed-input", help="GEN file for the speed figures (all its events, selection included; default: the held-out events)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    names = [u.strip() for u in args.units.split(",") if u.strip()]
    speed_events = read_events(args.speed_input) if args.speed_input else None
    all_events = read_events(args.test) if args.test else test_split_events(names[0])
    if args.max_events:
        all_events = all_events[: args.max_events]
    first = load_unit(names[0])
    events, ref, gen = reference(first, all_events)
    if speed_events is not None:
        print(f"speed measured on {len(speed_events)} events of {args.speed_input}")
    print(f"held-out events: {len(all_events)} ({args.test or 'test split of ' + names[0] + ' recipe'}), "
          f"{len(events)} selected with matched reco muon and jet; torch threads {torch.get_num_threads()}")
    results: dict[str, dict] = {}
    ensembles: dict[str, list[dict]] = {}
    for name in names:
        unit_dir = resolve_unit_dir(name)
        unit = load_unit(unit_dir)
        t0 = time.perf_counter()
        flash = from_output(unit.run(events, seed=args.seed))
        members = [unit_dir] + sorted(p for p in unit_dir.glob("member_*") if (p / "model.safetensors").is_file())
        member_flash = [flash] + [from_output(load_unit(m).run(events, seed=args.seed)) for m in members[1:]]
        ensembles[name] = member_flash
        res = {"features": compare(flash, ref, gen, FEATURES, args.seed), "aux": compare(flash, ref, gen, AUX, args.seed),
               "auc": auc_tests(flash, ref, gen, args.seed), "speed": speed(unit, speed_events if speed_events is not None else all_events), "training": training_time(unit_dir),
               "members": len(members)}
        if len(members) > 1:
            rs = np.array([[noise_floor_ratio(f[k], ref[k], seed=args.seed).ratio for k in FEATURES + AUX] for f in member_flash])
            res["member_median_R"] = np.median(rs, axis=1).tolist()
            res["member_training_s"] = [training_time(m)["wall_s"] for m in members]
            spread = []
            for k in FEATURES:
                bins = np.quantile(ref[k], np.linspace(0.01, 0.99, 31))
                band = ensemble_band([f[k] for f in member_flash], bins)
                spread.append(float(np.median(band["std"] / np.maximum(band["mean"], 1e-12))))
            res["ensemble_rel_spread_median"] = float(np.median(spread))
        res["eval_s"] = time.perf_counter() - t0
        results[name] = res

    for name, res in results.items():
        print(f"\n=== {name}: {res['members']} member(s); training {res['training']['wall_s']} s "
              f"({res['training']['epochs']} epochs, best at {res['training']['best_epoch']}, best val loss {res['training']['best_val']:.4f})")
        for group in ("features", "aux"):
            print(f"  {'quantity':<10} {'R':>7} {'R(resid)':>8}   {'med(flash)':>8} {'med(ref)':>8}   {'hw(flash)':>8} {'hw(ref)':>8}")
            for k, m in res[group].items():
                print(_row(k, m))
            rs = [m["R"] for m in res[group].values()]
            rr = [m["R_residual"] for m in res[group].values()]
            print(f"  {group}: median R {np.median(rs):.2f} (max {np.max(rs):.2f}); median R(resid) {np.median(rr):.2f} (max {np.max(rr):.2f})")
        for key, a in res["auc"].items():
            print(f"  classifier AUC on {key:<9}: flash vs ref {a['auc']:.3f}   ref halves {a['auc_ref_halves']:.3f}   "
                  f"({a['n_flash']} vs {a['n_reference']} events)")
        s = res["speed"]
        print(f"  speed (CPU, 1 thread, best of 3): unit {s['unit_input_events_per_s']:,.0f} input ev/s "
              f"({s['unit_selected_events_per_s']:,.0f} selected ev/s), model alone {s['model_events_per_s']:,.0f} ev/s; "
              f"paper {PAPER_EVENTS_PER_S:,.0f} ev/s")
        if "member_median_R" in res:
            print(f"  ensemble: median R per member {[round(r, 2) for r in res['member_median_R']]}, "
                  f"bin-by-bin relative spread (median over bins and features) {res['ensemble_rel_spread_median']:.3f}, "
                  f"training s per member {res['member_training_s']}")

    print("\nsummary")
    print(f"  {'unit':<16} {'med R feat':>10} {'med R aux':>9} {'max R':>6} {'med R resid':>11} {'AUC reco':>8} {'AUC g+r':>8} {'AUC floor':>9} {'ev/s unit':>10} {'ev/s model':>10} {'train s':>8}")
    for name, res in results.items():
        allr = [m["R"] for g in ("features", "aux") for m in res[g].values()]
        resid = [m["R_residual"] for g in ("features", "aux") for m in res[g].values()]
        print(f"  {name:<16} {np.median([m['R'] for m in res['features'].values()]):10.2f} {np.median([m['R'] for m in res['aux'].values()]):9.2f} "
              f"{max(allr):6.2f} {np.median(resid):11.2f} {res['auc']['reco']['auc']:8.3f} {res['auc']['gen+reco']['auc']:8.3f} "
              f"{res['auc']['gen+reco']['auc_ref_halves']:9.3f} {res['speed']['unit_input_events_per_s']:10,.0f} "
              f"{res['speed']['model_events_per_s']:10,.0f} {res['training']['wall_s']:8}")
    print(f"  paper (Chen et al. 2021): {PAPER_EVENTS_PER_S:,.0f} events/s on CPU (100 s per 100k events), training 30 min on an RTX 2080")

    if args.report:
        from flashsim.validate import validate

        unit = load_unit(names[0])
        ref_events = events[[f for f in events.fields if f in ("run", "luminosityBlock", "event") or f.startswith("Gen")]]
        ref_cols = unit.target_values(events)
        ref_cols = {k: ak.to_numpy(v) for k, v in ref_cols.items()} | {k: ak.to_numpy(v) for k, v in unit.event_columns(events).items()}
        for coll, arr in build_collections(unit.spec.outputs, ref_cols, len(events)).items():
            ref_events = ak.with_field(ref_events, arr, coll)
        flashes = [load_unit(m).run(events, seed=args.seed) for m in [resolve_unit_dir(names[0])] +
                   sorted(p for p in resolve_unit_dir(names[0]).glob("member_*") if (p / "model.safetensors").is_file())]
        result = validate(flashes, ref_events, ["Muon", "Jet", "MET"], args.report, paired=True, title=f"{names[0]} on held-out W+jet events")
        print(f"\nreport: {result['files']['html']} (pass: {result['pass']})")


if __name__ == "__main__":
    main()
