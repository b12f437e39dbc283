"""Strict unit files and recipes: a misspelled key in any table is an error naming the file, the
table path and the key (with the closest valid key where one is close)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAKE_UNIT, JET_UNIT, MET_UNIT

from flashsim.errors import InputError, UnitError
from flashsim.locations import zoo_dir
from flashsim.recipe import load_recipe
from flashsim.spec import UnitSpec

WJET_UNIT = (zoo_dir() / "wjet_regressor" / "unit.toml").read_text()
JET_EXTRA = JET_UNIT.replace(
    '  { event = "Pileup.nTrueInt" },\n',
    '  { event = "Pileup.nTrueInt" },\n  { feature = "nearest", collection = "GenJet", k = 1, fields = ["dr"], name = "nj", exclude_self = true },\n'
    '  { feature = "one_hot", field = "hadronFlavour", values = [0, 4, 5], abs = true },\n',
).replace('output_selection = "pt > 12"', 'output_selection = "pt > 12"\noutput_rules = [{ where = "abs(eta) > 2.5", columns = ["mass"], value = 1.0 }]')

# (unit text, text replaced, misspelling, expected table path in the message, suggestion or None)
CASES = {
    "top level": (JET_UNIT, 'gen_index = "genJetIdx"', 'gen_indx = "genJetIdx"', r"gen_indx: unknown key 'gen_indx' \(did you mean 'gen_index'\?\)"),
    "source": (JET_UNIT, 'source = { collection = "GenJet"', 'source = { colection = "GenJet"', r"source\.colection: unknown key 'colection' \(did you mean 'collection'\?\)"),
    "field feature": (JET_EXTRA, 'values = [0, 4, 5], abs = true', 'values = [0, 4, 5], abz = true', r"context\[5\]: unknown key 'abz' \(did you mean 'abs'\?\)"),
    "context steps": (JET_UNIT, '{ field = "pt", steps = ', '{ field = "pt", stepz = ', r"context\[0\]: unknown key 'stepz' \(did you mean 'steps'\?\)"),
    "nearest feature": (JET_EXTRA, 'exclude_self = true', 'exclude_slf = true', r"context\[4\]: unknown key 'exclude_slf' \(did you mean 'exclude_self'\?\)"),
    "target entry": (JET_UNIT, '{ column = "eta", steps =', '{ column = "eta", stepz =', r"targets: entry \[1\]: unknown key 'stepz' \(did you mean 'steps'\?\)"),
    "target step option": (JET_UNIT, '{ type = "log_ratio", reference = "pt" }', '{ type = "log_ratio", referense = "pt" }', r"targets: .*'referense'.*did you mean 'reference'"),
    "step type": (JET_UNIT, '{ type = "log_ratio", reference = "pt" }', '{ type = "logratio", reference = "pt" }', r"targets: .*unknown step type 'logratio' \(did you mean 'log_ratio'\?\)"),
    "context step option": (JET_UNIT, '{ field = "pt", steps = [{ type = "log" }', '{ field = "pt", steps = [{ type = "log", ofset = 1 }', r"context: .*'ofset'.*did you mean 'offset'"),
    "model": (JET_UNIT, "layers = 2, hidden = 16", "layerz = 2, hidden = 16", r"model: unknown option 'layerz' \(did you mean 'layers'\?\)"),
    "model type": (JET_UNIT, 'type = "coupling_rqs"', 'type = "couplng_rqs"', r"model: unknown model type 'couplng_rqs' \(did you mean 'coupling_rqs'\?\)"),
    "efficiency": (JET_UNIT, "efficiency = { hidden = 16", "efficiency = { hiden = 16", r"efficiency: unknown option 'hiden' \(did you mean 'hidden'\?\)"),
    "output rule": (JET_EXTRA, 'columns = ["mass"], value = 1.0', 'column = ["mass"], value = 1.0', r"output_rules\[0\]\.column: unknown key 'column' \(did you mean 'columns'\?\)"),
    "unit kind": (JET_UNIT, 'type = "object"', 'type = "objects"', r"type: unknown unit kind 'objects' \(did you mean 'object'\?\)"),
    "multiplicity": (FAKE_UNIT, "max_objects = 4", "max_object = 4", r"multiplicity\.max_object: unknown key 'max_object' \(did you mean 'max_objects'\?\)"),
    "event feature": (MET_UNIT, 'gen_collection = "GenJet"', 'gen_colection = "GenJet"', r"context\[2\]: unknown key 'gen_colection' \(did you mean 'gen_collection'\?\)"),
    "clean table": (WJET_UNIT, "dr = 0.5 }, fields = [\"index\"]", "dR = 0.5 }, fields = [\"index\"]", r"event_columns\[1\]\.clean: unknown key 'dR' \(did you mean 'dr'\?\)"),
    "delta_r to table": (WJET_UNIT, 'to = { collection = "GenJet"', 'to = { colection = "GenJet"', r"event_columns\[3\]\.to: unknown key 'colection' \(did you mean 'collection'\?\)"),
    "ranges": (WJET_UNIT, 'inputs = { "GenPart.pt"', 'input = { "GenPart.pt"', r"ranges\.input: unknown key 'input' \(did you mean 'inputs'\?\)"),
    "outputs entry": (WJET_UNIT, '{ collection = "MET", layout = "record"', '{ collection = "MET", layuot = "record"', r"outputs.*unknown key 'layuot' \(did you mean 'layout'\?\)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_misspelled_key_in_unit_file_names_file_path_and_key(case: str, tmp_path: Path) -> None:
    text, old, new, expected = CASES[case]
    assert old in text, "the case must change the unit file"
    path = tmp_path / "unit.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(UnitError, match=expected) as info:
        UnitSpec.load(path)
    assert str(path) in str(info.value)


def test_the_unaltered_unit_files_are_valid(tmp_path: Path) -> None:
    for text in {t for t, *_ in CASES.values()}:
        (tmp_path / "unit.toml").write_text(text)
        UnitSpec.load(tmp_path / "unit.toml")


def test_kind_refuses_tables_it_would_ignore(tmp_path: Path) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(MET_UNIT.replace('output = "MET"', 'output = "MET"\noutput_selection = "pt > 10"'))
    with pytest.raises(UnitError, match=r"\['output_selection'\] are not used by event units"):
        UnitSpec.load(path)
    path.write_text(JET_UNIT.replace('gen_index = "genJetIdx"\n', ""))
    with pytest.raises(UnitError, match="object units need gen_index"):
        UnitSpec.load(path)


RECIPE = """
unit = "jet"
[data]
inputs = ["x.root"]
[training]
epochs = 3
[efficiency]
epochs = 2
"""

RECIPE_CASES = {
    "top level": ("unit = ", "unti = ", r"unti: unknown key 'unti' \(did you mean 'unit'\?\)"),
    "section": ("[training]", "[trainig]", r"trainig: unknown key 'trainig' \(did you mean 'training'\?\)"),
    "training key": ("epochs = 3", "epoch = 3", r"training\.epoch: unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    "data key": ("inputs = ", "input = ", r"data\.input: unknown key 'input' \(did you mean 'inputs'\?\)"),
    "efficiency key": ("epochs = 2", "epocs = 2", r"efficiency\.epocs: unknown key 'epocs' \(did you mean 'epochs'\?\)"),
    "range": ("epochs = 3", "epochs = 0", r"training\.epochs: Input should be greater than or equal to 1"),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_misspelled_key_in_recipe_names_file_path_and_key(case: str, tmp_path: Path) -> None:
    old, new, expected = RECIPE_CASES[case]
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE.replace(old, new, 1))
    with pytest.raises(InputError, match=expected) as info:
        load_recipe(path)
    assert str(path) in str(info.value)


def test_recipe_override_sections_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    assert load_recipe(path, ["split.validation=0.3"]).split.validation == 0.3
    with pytest.raises(InputError, match=r"split\.validaton: unknown key 'validaton' \(did you mean 'validation'\?\)"):
        load_recipe(path, ["split.validaton=0.3"])


RANGE_CASES = {  # a [ranges] table appended to the tiny jet unit -> what the error says
    'inputs = { "GenMET.pt" = [0, 100] }': r"ranges.inputs: 'GenMET.pt' is not 'Collection.field' of a collection the unit reads \(GenJet, Pileup\)",
    'inputs = { "GenJet" = [0, 100] }': r"ranges.inputs: 'GenJet' is not 'Collection.field'",
    'targets = { area = [0, 1] }': r"ranges.targets: \['area'\] are not targets of the unit",
    'targets = { pt = [100, 10] }': r"ranges.targets: .*pt: range \[100.0, 10.0\] is empty",
    'targets = { pt = [0] }': r"ranges.targets.pt",
    'targets = { pt = "wide" }': r"ranges.targets.pt",
}


@pytest.mark.parametrize("table", sorted(RANGE_CASES))
def test_declared_ranges_are_checked(table: str, tmp_path: Path) -> None:
    path = tmp_path / "unit.toml"
    path.write_text(JET_UNIT + f"\n[ranges]\n{table}\n")
    with pytest.raises(UnitError, match=RANGE_CASES[table]):
        UnitSpec.load(path)
