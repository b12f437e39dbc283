"""Dataset extraction (incl. a file with the real CMS NanoAOD schema) and the training command."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import JET_UNIT, synthetic_events, write_recipe, write_unit
from flashsim.datasets import extract, load_dataset
from flashsim.errors import InputError
from flashsim.io.schema import nanoaod_types
from flashsim.recipe import load_recipe
from flashsim.train import train_unit
from flashsim.unit import load_unit


def test_training_lowers_validation_loss_and_writes_a_complete_unit(trained_units) -> None:
    unit_dir = trained_units["tinyjet"]
    record = json.loads((unit_dir / "training.json").read_text())
    val = record["model"]["history"]["val"]
    assert val[-1] < val[0], f"validation loss did not decrease: {val}"
    for name in ("unit.toml", "model.safetensors", "model.json", "efficiency.safetensors", "preprocessing.json", "loss.png"):
        assert (unit_dir / name).is_file(), name
    assert record["versions"]["torch"].startswith("2.")
    assert record["dataset"]["sources"][0]["sha256"]
    assert not list(unit_dir.glob("checkpoint_*.pt")), "checkpoints are removed after a complete training"
    assert load_unit(unit_dir).efficiency is not None


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, synthetic_file: Path) -> None:
    histories = {}
    for mode in ("straight", "interrupted"):
        unit_dir = write_unit(tmp_path / mode, JET_UNIT.replace("efficiency = { hidden = 16, layers = 2 }", ""))
        recipe = load_recipe(write_recipe(tmp_path / f"{mode}.toml", unit_dir, str(synthetic_file), epochs=4))
        if mode == "interrupted":
            def stop_after_two(info: dict) -> None:
                if info["epoch"] == 2:
                    raise KeyboardInterrupt
            with pytest.raises(KeyboardInterrupt):
                train_unit(recipe, log=lambda _m: None, progress=stop_after_two)
            assert (unit_dir / "checkpoint_model.pt").is_file()
            train_unit(recipe, resume=True, log=lambda _m: None)
        else:
            train_unit(recipe, log=lambda _m: None)
        histories[mode] = json.loads((unit_dir / "training.json").read_text())["model"]["history"]
    assert len(histories["interrupted"]["val"]) == len(histories["straight"]["val"]) == 4
    assert np.allclose(histories["interrupted"]["val"], histories["straight"]["val"], rtol=1e-5)
    assert np.allclose(histories["interrupted"]["train"], histories["straight"]["train"], rtol=1e-5)


def test_retraining_refits_whatever_preprocessing_is_on_disk(trained_units, tmp_path: Path, synthetic_file: Path) -> None:
    import shutil

    unit_dir = Path(shutil.copytree(trained_units["tinyjet"], tmp_path / "edited"))
    text = (unit_dir / "unit.toml").read_text().replace('{ field = "hadronFlavour" },\n', "")
    (unit_dir / "unit.toml").write_text(text)  # one context column fewer than the weights on disk
    stale = (unit_dir / "preprocessing.json").read_text().replace('"log_ratio"', '"from_another_version"')
    (unit_dir / "preprocessing.json").write_text(stale)  # written by a flashsim with other step types
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), epochs=1))
    train_unit(recipe, log=lambda _m: None)
    assert load_unit(unit_dir).context_pipeline.n_features == 3


def _cms_schema_file(path: Path, n: int = 400) -> Path:
    """A file with every branch of the real CMS NanoAOD schema, its types, dangling indices and placeholders."""
    rng = np.random.default_rng(0)
    types = nanoaod_types()
    counts = {"GenJet": rng.integers(1, 6, n), "GenPart": rng.integers(2, 8, n), "Jet": rng.integers(0, 6, n), "Muon": rng.integers(0, 3, n)}
    data: dict[str, object] = {}
    for name, btype in types.items():
        coll = name.split("_", 1)[0]
        if (name.startswith("n") and "_" not in name) or (btype.jagged and coll not in counts):
            continue  # counters (uproot writes them) and collections this test does not fill
        if btype.jagged:
            k = counts[coll]
            total = int(k.sum())
            if btype.dtype == np.bool_:
                flat = rng.integers(0, 2, total).astype(bool)
            elif np.issubdtype(btype.dtype, np.integer):
                flat = rng.integers(0, 3, total).astype(btype.dtype)
            else:
                flat = rng.uniform(0.05, 0.95, total).astype(btype.dtype)
            if name.endswith(("_pt", "_mass")):
                flat = (flat * 100 + 15).astype(btype.dtype)
            if name.endswith("_eta"):
                flat = (flat * 4 - 2).astype(btype.dtype)
            data[name] = ak.unflatten(flat, k)
        else:
            data[name] = (rng.uniform(1, 50, n) if btype.dtype.kind == "f" else rng.integers(0, 50, n)).astype(btype.dtype)
    # cross-references: valid ones spread over every gen jet of the event, some unmatched (-1), some past
    # the end of the pruned GenJet collection (99)
    local = ak.local_index(data["Jet_pt"])
    valid = (local * 2 + 1) % ak.Array(counts["GenJet"])
    data["Jet_genJetIdx"] = ak.values_astype(ak.where(local % 3 == 2, -1, ak.where(local % 3 == 1, 99, valid)), np.int32)
    btag = ak.to_numpy(ak.flatten(data["Jet_btagDeepFlavB"])).copy()
    btag[::7] = -3000.0  # tagger not computed
    data["Jet_btagDeepFlavB"] = ak.unflatten(btag, counts["Jet"])
    with uproot.recreate(path) as f:
        grouped: dict[str, object] = {}
        colls: dict[str, dict[str, object]] = {}
        for name, values in data.items():
            coll = name.split("_", 1)[0]
            if coll in counts:
                colls.setdefault(coll, {})[name.split("_", 1)[1]] = values
            else:
                grouped[name] = values
        grouped |= {c: ak.zip(v) for c, v in colls.items()}
        tree = f.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in grouped.items()})
        tree.extend(grouped)
    return path


CMS_JET_UNIT = JET_UNIT.replace(
    '{ column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },',
    '{ column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },\n'
    '  { column = "btagDeepFlavB", steps = [{ type = "logit", lo = 0.0, hi = 1.0 }, { type = "standardize" }] },',
).replace('{ field = "hadronFlavour" },', '{ field = "hadronFlavour" },\n  { field = "partonFlavour" },')


def test_extraction_from_real_cms_schema(tmp_path: Path) -> None:
    path = _cms_schema_file(tmp_path / "cms.root")
    unit = load_unit(write_unit(tmp_path / "cmsjet", CMS_JET_UNIT), require_trained=False)
    table = extract(unit, path)
    report = table.report
    n_jets = int(ak.sum(ak.num(uproot.open(path)["Events"]["Jet_pt"].array())))
    assert report.dangling_index > 0, "indices past nGenJet are counted"
    assert report.placeholder_rows.get("btagDeepFlavB", 0) > 0, "placeholder -3000 taggers are rejected and counted"
    assert report.matched > 0 and report.matched < n_jets
    tgt = table.columns["tgt.btagDeepFlavB"][table.columns["reconstructed"]]
    assert tgt.min() >= 0, "no placeholder reaches the training table"
    assert table.columns["ctx.hadronFlavour"].dtype == np.float64
    # every gen jet is paired with the first reco jet pointing to it, whatever its index
    plain = extract(load_unit(write_unit(tmp_path / "plainjet", JET_UNIT), require_trained=False), path)
    events = uproot.open(path)["Events"].arrays(["GenJet_pt", "Jet_pt", "Jet_genJetIdx"])
    expected_pt, expected_match = [], []
    for gen_pt, jet_pt, index in zip(events.GenJet_pt.to_list(), events.Jet_pt.to_list(), events.Jet_genJetIdx.to_list()):
        for g, pt in enumerate(gen_pt):
            if pt > 10:  # the unit's source selection
                partner = next((p for p, i in zip(jet_pt, index) if i == g), None)
                expected_match.append(partner is not None)
                expected_pt.append(partner if partner is not None else 0.0)
    np.testing.assert_array_equal(plain.columns["reconstructed"], expected_match)
    np.testing.assert_allclose(plain.columns["tgt.pt"][plain.columns["reconstructed"]], np.array(expected_pt)[expected_match], rtol=1e-6)
    matched_index = ak.flatten(events.Jet_genJetIdx[(events.Jet_genJetIdx >= 0) & (events.Jet_genJetIdx < 90)])
    assert len(np.unique(ak.to_numpy(matched_index))) > 2, "the fixture's matches point at many gen jets, not only the first"
    saved = load_dataset(table.save(tmp_path / "jet.parquet"))
    assert saved.report.dangling_index == report.dangling_index and len(saved) == len(table)
    assert saved.report.sources[0]["sha256"]


def test_recipe_errors_before_training(tmp_path: Path, synthetic_file: Path) -> None:
    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    recipe = write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), extra="lrate = 3")
    with pytest.raises(InputError, match=r"efficiency\.lrate: unknown key 'lrate'"):
        load_recipe(recipe)
    good = write_recipe(tmp_path / "g.toml", unit_dir, str(synthetic_file))
    with pytest.raises(InputError, match=r"optimiser: unknown key 'optimiser' \(did you mean 'optimizer'\?\)"):
        load_recipe(good, ["optimiser.lr=0.1"])
    bad_unit = write_unit(tmp_path / "bad", JET_UNIT.replace('{ field = "eta" },', '{ field = "etaa" },'))
    with pytest.raises(InputError, match=r"unit 'tinyjet'.*field 'etaa' not in collection"):
        train_unit(load_recipe(write_recipe(tmp_path / "b.toml", bad_unit, str(synthetic_file))), log=lambda _m: None)
    assert not (bad_unit / "model.safetensors").exists()


@pytest.mark.parametrize("calibration", ["validation", "all"])
def test_platt_scaling_is_fitted_on_the_rows_the_recipe_names(tmp_path: Path, synthetic_file: Path, calibration: str) -> None:
    import torch

    from flashsim.train import _dataset_for, _split
    from flashsim.unit import Unit

    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), epochs=1, extra=f'calibration = "{calibration}"'))
    unit = train_unit(recipe, log=lambda _m: None)
    dataset, train, validation = _split(recipe, _dataset_for(recipe, Unit(unit.spec), lambda _m: None))
    assert unit.context_pipeline is not None and unit.efficiency is not None
    context = torch.as_tensor(unit.context_pipeline.forward({k: dataset.columns[f"ctx.{k}"] for k in unit.spec.context_columns}))
    with torch.no_grad():
        p = unit.efficiency.probability(context).numpy()
    label = dataset.columns["reconstructed"].astype(bool)
    rows = validation if calibration == "validation" else train | validation
    # a logistic fit with an intercept matches the rate of the rows it is fitted on
    assert p[rows].sum() == pytest.approx(label[rows].sum(), rel=1e-3)
    if calibration == "validation":  # the training rows were not in the fit: their rate is not matched
        assert p[train].sum() != pytest.approx(label[train].sum(), rel=1e-3)


@pytest.mark.parametrize(("patience", "warned"), [(1, True), (30, False)])
def test_a_classifier_stopped_at_a_high_rate_is_reported(tmp_path: Path, synthetic_file: Path, patience: int, warned: bool) -> None:
    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    recipe = write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), epochs=1)
    text = recipe.read_text().replace("[efficiency]\nepochs = 2", f"[efficiency]\nepochs = 30\nlr = 0.05\npatience = {patience}")
    recipe.write_text(text)
    lines: list[str] = []
    train_unit(load_recipe(recipe), log=lines.append)
    record = json.loads((unit_dir / "training.json").read_text())["efficiency"]
    stopped = [line for line in lines if "classifier stopped early" in line]
    assert bool(stopped) == warned, (record["epochs_run"], lines)
    if warned:
        assert record["epochs_run"] < 30 and f"at epoch {record['epochs_run']} of 30" in stopped[0]


def test_an_unknown_calibration_is_an_error(tmp_path: Path, synthetic_file: Path) -> None:
    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    recipe = write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), extra='calibration = "training"')
    with pytest.raises(InputError, match=r"efficiency\.calibration.*'validation' or 'all'"):
        load_recipe(recipe)


def test_zero_matched_objects_is_an_error(tmp_path: Path) -> None:
    events = synthetic_events(200)
    events = ak.with_field(events, ak.with_field(events.Jet, ak.full_like(events.Jet.genJetIdx, -1), "genJetIdx"), "Jet")
    from flashsim.io import write_events

    path = write_events(events, tmp_path / "nomatch.root")
    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    with pytest.raises(InputError, match=r"unit 'tinyjet': no row with a reco target"):
        train_unit(load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(path))), log=lambda _m: None)


def test_target_outside_a_transform_domain_is_named_before_training(tmp_path: Path, synthetic_file: Path) -> None:
    unit_dir = write_unit(tmp_path / "u", JET_UNIT.replace('{ column = "eta", steps = [{ type = "difference", reference = "eta" }, { type = "standardize" }] },',
                                                           '{ column = "eta", steps = [{ type = "log" }, { type = "standardize" }] },'))
    with pytest.raises(InputError, match=r"unit 'tinyjet': preprocessing cannot be fitted.*column 'eta', step 'log'"):
        train_unit(load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file))), log=lambda _m: None)
    assert not (unit_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_data_parallel_training_with_torchrun(tmp_path: Path, synthetic_file: Path) -> None:
    """Two CPU processes (gloo) under torchrun train one unit; rank 0 writes it."""
    import subprocess
    import sys

    unit_dir = write_unit(tmp_path / "ddp", JET_UNIT)
    recipe = write_recipe(tmp_path / "ddp.toml", unit_dir, str(synthetic_file), epochs=2)
    script = Path(sys.executable).parent / "flashsim"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), "train", "tinyjet", "--recipe", str(recipe)],
                            capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((unit_dir / "training.json").read_text())
    assert record["world_size"] == 2
    assert record["model"]["history"]["val"][-1] < record["model"]["history"]["val"][0]
    assert load_unit(unit_dir).trained


def test_a_class_only_validation_rows_hold_is_learnt(tmp_path: Path) -> None:
    """A categorical step that learns its classes sees the validation rows too (an electron's lostHits of 2 only
    among the validation rows stopped a training)."""
    from flashsim.io import write_events
    from flashsim.train import _split

    events = synthetic_events(400, seed=5)
    unit_dir = write_unit(tmp_path / "u", JET_UNIT.replace(
        '{ column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },',
        '{ column = "mass", steps = [{ type = "log" }, { type = "standardize" }] },\n'
        '  { column = "jetId", steps = [{ type = "categorical" }, { type = "standardize" }] },'))
    with_id = lambda ids: ak.with_field(events, ak.with_field(events.Jet, ids, "jetId"), "Jet")  # noqa: E731
    path = write_events(with_id(ak.full_like(events.Jet.genJetIdx, 6)), tmp_path / "a.root")
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(path), epochs=1))
    dataset, _, val_mask = _split(recipe, extract(load_unit(unit_dir, require_trained=False), path))
    rare_event = int(dataset.columns["event_id"][val_mask & dataset.columns["reconstructed"].astype(bool)][0])  # file 0
    in_rare = (np.arange(len(events)) == rare_event)[:, None] & ak.ones_like(events.Jet.genJetIdx, dtype=bool)
    write_events(with_id(ak.where(in_rare, 2, 6)), path)
    train_unit(load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(path), epochs=1)), log=lambda _m: None)
    drawn = load_unit(unit_dir).run(events[[f for f in events.fields if f != "Jet"]], seed=1).Jet.jetId
    assert set(np.unique(ak.to_numpy(ak.flatten(drawn)))) <= {2, 6}
