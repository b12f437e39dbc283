"""Bad GEN values: a non-finite or unphysical value read by the chain is an error naming the file, entries,
branch, event and value; with --on-bad-input skip its event is dropped and counted. Never silent."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import synthetic_events
from flashsim.chain import Chain
from flashsim.cli import app
from flashsim.input_checks import BadInput, DeclaredRange, bad_events, declared_ranges
from flashsim.io import read_events, write_events

pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")


def _with(events: ak.Array, collection: str, field: str, index: int, value: float) -> ak.Array:
    record = events[collection]
    values = record[field]
    flat = ak.to_numpy(ak.flatten(values, axis=None)).astype(np.float32).copy()
    flat[index] = value
    new = ak.unflatten(flat, ak.num(values)) if values.ndim > 1 else flat
    return ak.with_field(events, ak.with_field(record, new, field), collection)


BAD = [  # (collection, field, flat index, value, what the message says)
    ("GenJet", "pt", 40, np.nan, "nan"),
    ("GenJet", "pt", 41, np.inf, "inf"),
    ("GenJet", "pt", 42, -3.0, "-3"),
    ("GenJet", "pt", 43, 1e7, "1e\\+07"),
    ("GenJet", "eta", 44, np.nan, "nan"),
    ("GenJet", "phi", 45, -np.inf, "-inf"),
    ("GenJet", "mass", 46, -50.0, "-50"),
    ("GenMET", "pt", 7, np.nan, "nan"),
    ("GenMET", "phi", 8, np.inf, "inf"),
    ("Pileup", "nTrueInt", 9, np.nan, "nan"),
    ("Pileup", "nTrueInt", 10, -1.0, "-1"),
]


@pytest.mark.parametrize("collection,field,index,value,shown", BAD)
def test_a_bad_gen_value_is_an_error_naming_branch_event_and_value(trained_units, collection, field, index, value, shown,
                                                                   tmp_path: Path) -> None:
    events = _with(synthetic_events(200, seed=3), collection, field, index, value)
    path = write_events(events, tmp_path / "gen.root")
    chain = Chain([trained_units[n] for n in ("tinyjet", "tinymet")])
    with pytest.raises(BadInput, match=rf"gen\.root \(entries 0-200\): branch {collection}_{field}: {shown} in event \d+ "
                                       rf"of the chunk \(run 1, luminosityBlock 1, event \d+\)") as info:
        chain.generate(path, tmp_path / "out.root", seed=1)
    assert "--on-bad-input skip" in str(info.value)
    assert not (tmp_path / "out.root").exists() and not list(tmp_path.glob(".out.root*"))


def test_skipping_drops_and_counts_only_the_bad_events(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(300, seed=3)
    for collection, field, index, value, _ in BAD[:4] + BAD[7:10]:
        events = _with(events, collection, field, index, value)
    good, failed = bad_events(events, ["GenJet", "GenMET", "Pileup"], skip=True)
    path = write_events(events, tmp_path / "gen.root")
    result = CliRunner().invoke(app, ["generate", "--chain", f"{trained_units['tinyjet']},{trained_units['tinymet']}", "--input",
                                      str(path), "--output", str(tmp_path / "out.root"), "--on-bad-input", "skip", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "GenJet_pt" in result.output and "GenMET_pt" in result.output
    out = read_events(tmp_path / "out.root")
    assert len(out) == int(good.sum()) == 300 - sum(failed.values()) and 3 <= sum(failed.values()) <= 7
    kept = set(ak.to_numpy(out.event).tolist())
    assert kept == set(ak.to_numpy(events.event[good]).tolist())


def test_collections_the_chain_does_not_read_are_not_checked(trained_units, tmp_path: Path) -> None:
    chain = Chain([trained_units[n] for n in ("tinyjet", "tinymet")])
    assert "GenPart" not in chain.inputs
    events = _with(synthetic_events(100, seed=3), "GenPart", "pt", 11, np.nan)
    assert chain.generate(write_events(events, tmp_path / "gen.root"), tmp_path / "out.root", seed=1) == 100


def test_the_in_memory_chain_refuses_bad_values_too(trained_units) -> None:
    events = _with(synthetic_events(50, seed=3), "GenJet", "pt", 3, np.nan)
    with pytest.raises(BadInput, match="branch GenJet_pt: nan"):
        Chain([trained_units["tinyjet"]]).run(events, seed=1)


def _declaring(unit_dir: Path, tmp_path: Path, table: str) -> Path:
    """A copy of a trained unit whose unit.toml declares ``table`` under [ranges] (unit.toml is not digested)."""
    copy = shutil.copytree(unit_dir, tmp_path / unit_dir.name)
    (copy / "unit.toml").write_text((copy / "unit.toml").read_text() + f"\n[ranges]\n{table}\n")
    return copy


def test_a_value_outside_a_declared_input_range_is_bad_input(trained_units, tmp_path: Path) -> None:
    unit = _declaring(trained_units["tinyjet"], tmp_path, 'inputs = { "GenJet.eta" = [-2.6, 2.6], "Pileup.nPU" = [0, 60] }')
    events = _with(synthetic_events(200, seed=3), "GenJet", "eta", 17, 3.0)  # physical, but not for this unit
    path = write_events(events, tmp_path / "gen.root")
    with pytest.raises(BadInput, match=r"branch GenJet_eta: 3 in event \d+ .* within \[-2.6, 2.6\] \(declared by unit 'tinyjet'\)"):
        Chain([unit]).generate(path, tmp_path / "out.root", seed=1)
    assert not (tmp_path / "out.root").exists()
    npu = ak.to_numpy(events.Pileup.nPU).copy()
    npu[5] = 61  # an integer branch is checked where a unit declares its range
    events = ak.with_field(events, ak.with_field(events.Pileup, npu, "nPU"), "Pileup")
    good, failed = bad_events(events, ["GenJet", "Pileup"], skip=True, declared=Chain([unit]).input_ranges)
    assert failed == {"GenJet_eta": 1, "Pileup_nPU": 1} and int((~good).sum()) == 2 and not good[5]


def test_declared_input_ranges_of_several_units_intersect() -> None:
    ranges = declared_ranges([("a", {"GenJet.pt": (0.0, 100.0)}), ("b", {"GenJet.pt": (10.0, 200.0), "GenMET.pt": (0.0, 50.0)})])
    assert ranges["GenJet_pt"] == DeclaredRange(10.0, 100.0, ("a", "b")) and ranges["GenMET_pt"] == DeclaredRange(0.0, 50.0, ("b",))


def test_a_drawn_value_outside_the_declared_target_range_is_never_written(trained_units, synthetic_file: Path, tmp_path: Path) -> None:
    unit = _declaring(trained_units["tinyjet"], tmp_path, "targets = { pt = [12, 40] }")  # jets above 40 GeV are common
    result = CliRunner().invoke(app, ["generate", "--chain", str(unit), "--input", str(synthetic_file), "--output",
                                      str(tmp_path / "out.root"), "--jobs", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(r"unit 'tinyjet' \(.*tinyjet\) drew Jet_pt = [\d.]+ in \d+ of \d+ rows, outside its declared range \[12, 40\]",
                     " ".join(result.output.split()))
    assert not (tmp_path / "out.root").exists() and not list(tmp_path.glob(".out.root*"))
    wide = _declaring(trained_units["tinyjet"], tmp_path / "wide", "targets = { pt = [12, 6800], eta = [-10, 10] }")
    assert Chain([wide]).generate(synthetic_file, tmp_path / "wide.root", seed=1) == 3000
