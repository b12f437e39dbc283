"""Model choice by physics: the unit's physics metric, checkpoint selection in training, and `flashsim tune`."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from conftest import synthetic_events, write_recipe
from flashsim.io import write_events
from flashsim.unit import load_unit
from flashsim.validate.physics import physics_metric, read_validation_events


@pytest.fixture(scope="module")
def validation_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GEN+RECO events no training row came from (another seed than the training file)."""
    path = tmp_path_factory.mktemp("validation") / "validation.root"
    write_events(synthetic_events(1500, seed=29), path)
    return path


def _stand_in(unit, jets):
    """The unit with its model replaced by the reference itself (perfect) or by a transformation of it
    (the synthetic events are numbered 0, 1, ...: an event's number is its row)."""
    unit.collections = lambda events, seed, device: (events, {"Jet": jets[ak.to_numpy(events.event).astype(int)]})  # noqa: ARG005
    return unit


def test_metric_of_a_perfect_and_a_broken_model(trained_units, validation_file):
    events = read_validation_events(validation_file)
    matched = events.Jet[events.Jet.genJetIdx >= 0]
    perfect = physics_metric(_stand_in(load_unit(trained_units["tinyjet"]), matched), events)
    assert perfect.median_ratio == pytest.approx(1.0) and perfect.worst_ratio == pytest.approx(1.0)
    assert perfect.auc == pytest.approx(perfect.auc_floor, abs=0.05)
    broken = physics_metric(_stand_in(load_unit(trained_units["tinyjet"]), ak.with_field(matched, matched.pt * 1.5, "pt")), events)
    assert broken.worst_target == "pt" and broken.worst_ratio > 10
    assert broken.auc > broken.auc_floor + 0.2 and broken.score > perfect.score + 0.5
    trained = physics_metric(load_unit(trained_units["tinyjet"]), events)
    assert set(trained.ratios) == {"pt", "eta", "phi", "mass"} and trained.events == len(events)


def test_metric_of_a_merging_unit_whose_context_reads_its_collection(tmp_path, synthetic_file, validation_file, trained_units):
    """A fake-jet unit conditioned on the matched jets earlier units drew: run beside the reference's matched jets (as
    in training), its own jets alone compared."""
    from conftest import FAKE_UNIT, write_unit
    from flashsim.recipe import load_recipe
    from flashsim.train import train_unit

    text = FAKE_UNIT.replace('context = [', 'context = [ { feature = "count", collection = "Jet", selection = "genJetIdx >= 0", '
                                           'name = "n_matched" },')
    unit_dir = write_unit(tmp_path / "fake_on_matched", text)
    train_unit(load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file))), log=lambda _msg: None)
    events = read_validation_events(validation_file)
    fakes = events.Jet[events.Jet.genJetIdx < 0][:, :4]  # the reference rows: up to max_objects per event
    perfect = physics_metric(_stand_in(load_unit(unit_dir), fakes), events)
    assert perfect.median_ratio == pytest.approx(1.0) and perfect.worst_ratio == pytest.approx(1.0)
    trained = physics_metric(load_unit(unit_dir), events)
    alone = physics_metric(load_unit(trained_units["tinyfake"]), events)
    assert set(trained.ratios) == set(alone.ratios) == {"pt", "eta", "phi", "mass"}
    assert trained.worst_ratio < 3 * alone.worst_ratio, (trained.ratios, alone.ratios)  # its own fakes, not the matched jets too


def test_selection_keeps_the_best_evaluated_epoch(tmp_path, synthetic_file, validation_file):
    from conftest import JET_UNIT, write_unit
    from flashsim.recipe import load_recipe
    from flashsim.train import train_unit

    unit_dir = write_unit(tmp_path / "tinyjet", JET_UNIT)
    extra = f'[selection]\nmetric = "physics"\nevery = 1\ninput = "{validation_file}"\nevents = 600'
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), epochs=3, extra=extra))
    unit = train_unit(recipe, log=lambda _msg: None)
    record = json.loads((unit_dir / "training.json").read_text())["model"]
    evaluations = record["selection"]["evaluations"]
    assert [e["epoch"] for e in evaluations] == [1, 2, 3]
    scores = [e["score"] for e in evaluations]
    assert record["selection"]["best_epoch"] == evaluations[int(np.argmin(scores))]["epoch"]
    # the unit written is the selected state: its metric is the selected evaluation's
    kept = physics_metric(unit, read_validation_events(validation_file, 600))
    assert kept.score == pytest.approx(min(scores))


def test_selection_section_is_strict(tmp_path, synthetic_file):
    from flashsim.errors import InputError
    from flashsim.recipe import load_recipe

    typo = write_recipe(tmp_path / "r.toml", tmp_path, str(synthetic_file), extra='[selection]\nmetric = "physics"\nevry = 2')
    with pytest.raises(InputError, match="evry"):
        load_recipe(typo)
    no_input = write_recipe(tmp_path / "s.toml", tmp_path, str(synthetic_file), extra='[selection]\nmetric = "physics"')
    with pytest.raises(InputError, match="needs input"):
        load_recipe(no_input)


TUNE = """
[selection]
input = "{validation}"
events = 600
[tune.space.optimizer]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
[tune.space.model]
hidden = [8, 16]
"""


def _tune_recipe(tmp_path, synthetic_file, validation_file, space=TUNE):
    from conftest import JET_UNIT, write_unit

    unit_dir = write_unit(tmp_path / "tinyjet", JET_UNIT)
    return write_recipe(tmp_path / "tune.toml", unit_dir, str(synthetic_file), epochs=1, extra=space.format(validation=validation_file))


def test_tune_runs_resumes_and_records(tmp_path, synthetic_file, validation_file):
    from flashsim.tune import tune_unit

    recipe = _tune_recipe(tmp_path, synthetic_file, validation_file)
    study, output = tmp_path / "study", tmp_path / "best"
    first = tune_unit(recipe, 2, study, output, log=lambda _msg: None)
    assert [t["number"] for t in first["trials"]] == [0, 1]
    again = tune_unit(recipe, 1, study, output, log=lambda _msg: None)
    record = json.loads((study / "study.json").read_text())
    assert record == json.loads(json.dumps(again))
    assert [t["number"] for t in record["trials"]] == [0, 1, 2]
    assert record["trials"][:2] == first["trials"]  # finished trials are not rerun
    for trial in record["trials"]:
        assert trial["state"] == "COMPLETE" and set(trial["params"]) == {"optimizer.lr", "model.hidden"}
        assert trial["score"] == trial["metric"]["score"] and np.isfinite(trial["nll"])
    assert record["best"]["score"] == min(t["score"] for t in record["trials"])
    best = load_unit(output)
    assert best.model is not None and best.model.config["hidden"] == record["best"]["params"]["model.hidden"]
    assert [d.name for d in (study / "trials").iterdir()] == [f"trial_{record['best']['number']}"]


@pytest.mark.parametrize("space, message", [
    ("[tune.space.optimizer]\nlrr = [0.001]", "lrr"),
    ("[tune.space.optimizer]\nlr = {{ low = 0.0, high = 0.1, log = true }}", "log range needs low > 0"),
    ("[tune.space.model]\nhiden = [8, 16]", "hiden"),
    ("", "tune.space. is empty"),
])
def test_tune_refuses_a_bad_space(tmp_path, synthetic_file, validation_file, space, message):
    from flashsim.errors import FlashsimError
    from flashsim.tune import tune_unit

    recipe = _tune_recipe(tmp_path, synthetic_file, validation_file, '[selection]\ninput = "{validation}"\n' + space)
    with pytest.raises(FlashsimError, match=message):
        tune_unit(recipe, 1, tmp_path / "study", tmp_path / "best", log=lambda _msg: None)
    assert not (tmp_path / "study").exists()


def test_tune_needs_the_validation_file(tmp_path, synthetic_file):
    from flashsim.errors import FlashsimError
    from flashsim.tune import tune_unit

    recipe = _tune_recipe(tmp_path, synthetic_file, tmp_path / "missing.root")
    with pytest.raises(FlashsimError, match="missing.root does not exist"):
        tune_unit(recipe, 1, tmp_path / "study", tmp_path / "best", log=lambda _msg: None)


def test_tune_command_reports_a_bad_space_on_one_line(tmp_path, synthetic_file, validation_file):
    from test_cli import assert_one_error_line, run

    recipe = _tune_recipe(tmp_path, synthetic_file, validation_file, '[selection]\ninput = "{validation}"\n[tune.space.optimizer]\nlrr = [0.001]')
    code, output = run("tune", "tinyjet", "--recipe", recipe, "--trials", 1, "--study", tmp_path / "study", "--output", tmp_path / "best")
    assert_one_error_line(code, output, "lrr")
