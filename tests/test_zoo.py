"""The committed zoo units load with this code, are found by name (packaged zoo and ``FLASHSIM_UNITS``)
and the default chain runs on refsim GEN events."""

from __future__ import annotations

import os
import shutil
from importlib.resources import files
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

import flashsim
from flashsim.chain import DEFAULT_CHAIN, Chain
from flashsim.errors import InputError, UnitError
from flashsim.recipe import load_recipe
from flashsim.unit import UnitSpec, load_unit
from flashsim.locations import (
    UNITS_ENV, find_units, recipe_names, recipes_dir, resolve_recipe, resolve_unit_dir, unit_search_path, zoo_dir,
    zoo_unit_names,
)

ZOO = sorted(p.name for p in zoo_dir().iterdir() if (p / "unit.toml").is_file())
SHIPPED = ["electron", "electron_fromjet", "electron_fromjet2", "electron_fromphoton", "fakeelectron", "fakejet", "fakejet_run3", "fakemuon", "fakephoton", "jet", "jet_run3", "met", "met_genonly",
           "muon", "photon", "photon_fromelectron", "photon_fromjet", "puppimet", "wjet_flow", "wjet_regressor"]  # every one trained


def test_the_zoo_holds_the_shipped_units() -> None:
    assert ZOO == SHIPPED, "a unit added to or lost from the zoo must be listed here (and trained)"


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_spec_is_valid(name: str) -> None:
    spec = UnitSpec.load(zoo_dir() / name / "unit.toml")
    assert spec.name == name


def test_packaged_zoo_and_recipes_resolve_through_importlib_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNITS_ENV, raising=False)
    package = Path(flashsim.__file__).parent
    assert zoo_dir() == Path(str(files("flashsim") / "zoo")) == package / "zoo"
    assert recipes_dir() == Path(str(files("flashsim") / "recipes")) == package / "recipes"
    assert unit_search_path() == [zoo_dir()]
    assert set(DEFAULT_CHAIN) <= set(ZOO) and zoo_unit_names() == ZOO
    for name in DEFAULT_CHAIN:
        assert resolve_unit_dir(name) == zoo_dir() / name
        assert resolve_recipe(name) == recipes_dir() / f"{name}.toml"
    assert resolve_unit_dir(zoo_dir() / "muon" / "unit.toml") == zoo_dir() / "muon"


@pytest.mark.parametrize("name", recipe_names())
def test_every_packaged_recipe_trains_a_zoo_unit(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.path == recipes_dir() / f"{name}.toml"
    assert recipe.unit in ZOO


def test_user_units_dir_is_searched_before_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "my units"
    (user / "met").mkdir(parents=True)  # a user's MET (here untrained) replaces the zoo's
    shutil.copyfile(zoo_dir() / "met" / "unit.toml", user / "met" / "unit.toml")
    shutil.copytree(zoo_dir() / "met_genonly", user / "mymet")
    (user / "mymet" / "unit.toml").write_text((user / "mymet" / "unit.toml").read_text().replace('"met_genonly"', '"mymet"', 1))
    (user / "not_a_unit").mkdir()
    monkeypatch.setenv(UNITS_ENV, os.pathsep.join([str(tmp_path / "missing"), "", str(user)]))

    assert unit_search_path() == [tmp_path / "missing", user, zoo_dir()]
    assert resolve_unit_dir("met") == user / "met"
    assert resolve_unit_dir("jet") == zoo_dir() / "jet"
    assert find_units()["met"] == user / "met" and find_units()["mymet"] == user / "mymet"
    assert zoo_unit_names() == sorted({*ZOO, "mymet"})
    assert load_unit("mymet").spec.name == "mymet"
    assert not load_unit("met", require_trained=False).trained  # the user's copy, not the zoo's trained MET
    with pytest.raises(UnitError, match="no trained weights"):
        load_unit("met")

    from typer.testing import CliRunner

    from flashsim.cli import app

    listing = CliRunner().invoke(app, ["units"], env={UNITS_ENV: str(user), "COLUMNS": "300"})
    assert listing.exit_code == 0, listing.output
    rows = {line.split("│")[1].strip(): line for line in listing.output.splitlines() if line.count("│") > 2}
    assert "mymet" in rows and "zoo" in rows["jet"] and str(user) in rows["met"]


def test_unknown_unit_names_the_search_path_and_suggests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UNITS_ENV, str(tmp_path))
    with pytest.raises(UnitError) as info:
        resolve_unit_dir("muonn")
    message = str(info.value)
    assert "'muonn' not found" in message and "did you mean 'muon'?" in message
    assert str(tmp_path) in message and str(zoo_dir()) in message and UNITS_ENV in message
    assert all(name in message for name in ZOO)
    with pytest.raises(UnitError, match="not found") as info:
        load_unit("xyzzy")
    assert "did you mean" not in str(info.value)
    with pytest.raises(InputError, match="did you mean 'jet'"):
        load_recipe("jett")


@pytest.mark.parametrize("name", ZOO)
def test_trained_zoo_units_load(name: str) -> None:
    unit = load_unit(name)
    assert unit.trained and unit.context_pipeline.fitted and unit.target_pipeline.fitted


def test_default_chain_on_refsim_gen(tmp_path) -> None:
    pytest.importorskip("pythia8mc")
    from flashsim.refsim import DetectorParams, generate

    gen = ak.concatenate(list(generate("ttbar", 40, pileup=35.0, seed=3, gen_only=True, params=DetectorParams(pu_pool_size=200))))
    flash = Chain(list(DEFAULT_CHAIN)).run(gen, seed=1)
    for coll, fields in {"Jet": ("pt", "eta", "btagDeepFlavB", "jetId", "genJetIdx"), "Muon": ("pt", "sip3d", "genPartIdx"),
                         "MET": ("pt", "phi", "sumEt")}.items():
        for field in fields:
            values = ak.to_numpy(ak.flatten(flash[coll][field], axis=None))
            assert np.all(np.isfinite(values.astype(np.float64))), f"{coll}.{field}"
    assert ak.all(flash.Jet.pt >= 15) and ak.sum(ak.num(flash.Jet)) > 40
    assert set(np.unique(ak.to_numpy(ak.flatten(flash.Jet.jetId)))) <= {0, 2, 6}
    fractions = flash.Jet.chHEF + flash.Jet.neHEF + flash.Jet.chEmEF + flash.Jet.neEmEF + flash.Jet.muEF
    assert ak.all(fractions <= 1 + 1e-5)

    import warnings

    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from flashsim.io import write_events

    path = write_events(flash, tmp_path / "flash.root")
    assert {"nJet", "Jet_btagDeepFlavB", "Muon_genPartIdx", "MET_sumEt", "GenPart_pdgId"} <= set(uproot.open(path)["Events"].keys())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = nano.Jet.matched_gen
        muon_gen = nano.Muon.matched_gen
    real = flash.Jet.genJetIdx >= 0
    assert ak.all(ak.fill_none(matched.pt, -1)[real] == flash.GenJet.pt[flash.Jet.genJetIdx[real]])
    assert ak.all(abs(muon_gen.pdgId) == 13)
