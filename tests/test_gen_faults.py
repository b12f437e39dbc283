"""Bad GEN files fed to `flashsim generate`: truncated at many offsets, empty, foreign, missing a collection
or a field, a branch of the wrong type. Each ends in one clear error line naming the file (exit 1), or, for
input that is merely unusual (events with no objects), a correct output; never a traceback or a partial file."""

from __future__ import annotations

import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from typer.testing import CliRunner

from conftest import synthetic_events
from flashsim.cli import app
from flashsim.io import read_events, write_events

pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_events(synthetic_events(400, seed=8), tmp_path_factory.mktemp("gen") / "good.root")


def generate(trained_units, path: Path, out: Path) -> tuple[int, str]:
    chain = f"{trained_units['tinyjet']},{trained_units['tinymet']}"
    result = CliRunner().invoke(app, ["generate", "--chain", chain, "--input", str(path), "--output", str(out), "--jobs", "1"])
    return result.exit_code, result.output


def assert_clear_failure(code: int, output: str, path: Path, out: Path, *words: str) -> None:
    assert code == 1, output
    errors = [line for line in output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    assert path.name in errors[0] and all(w in errors[0] for w in words), output
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "no output, no partial file"


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_truncated_file_is_a_clear_error(trained_units, good_file: Path, fraction: float, tmp_path: Path) -> None:
    data = good_file.read_bytes()
    bad = tmp_path / "truncated.root"
    bad.write_bytes(data[: int(len(data) * fraction)])
    assert_clear_failure(*generate(trained_units, bad, tmp_path / "out.root"), bad, tmp_path / "out.root")


@pytest.mark.parametrize("offset", [0.2, 0.5, 0.8])
def test_a_file_with_garbage_inside_is_a_clear_error(trained_units, good_file: Path, offset: float, tmp_path: Path) -> None:
    data = bytearray(good_file.read_bytes())
    start = int(len(data) * offset)
    data[start : start + 4096] = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    bad = tmp_path / "garbled.root"
    bad.write_bytes(bytes(data))
    code, output = generate(trained_units, bad, tmp_path / "out.root")
    if code == 0:  # the garbage hit bytes nothing reads (padding, the streamer info of unused classes)
        assert len(read_events(tmp_path / "out.root")) == 400
    else:
        assert_clear_failure(code, output, bad, tmp_path / "out.root")


def test_random_bytes_and_a_foreign_tree_are_clear_errors(trained_units, tmp_path: Path) -> None:
    noise = tmp_path / "noise.root"
    noise.write_bytes(np.random.default_rng(2).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    assert_clear_failure(*generate(trained_units, noise, tmp_path / "a.root"), noise, tmp_path / "a.root")
    foreign = tmp_path / "foreign.root"
    with uproot.recreate(foreign) as f:
        f["Runs"] = {"run": np.arange(3, dtype=np.uint32)}
    assert_clear_failure(*generate(trained_units, foreign, tmp_path / "b.root"), foreign, tmp_path / "b.root", "Events")


def _without(events: ak.Array, collection: str, field: str | None = None) -> ak.Array:
    if field is None:
        return events[[f for f in events.fields if f != collection]]
    record = events[collection]
    return ak.with_field(events, record[[f for f in record.fields if f != field]], collection)


@pytest.mark.parametrize("collection,field", [("GenJet", None), ("Pileup", None), ("GenMET", None), ("GenJet", "pt"),
                                              ("GenJet", "eta"), ("GenJet", "hadronFlavour"), ("Pileup", "nTrueInt"),
                                              ("GenMET", "phi")])
def test_a_missing_collection_or_field_is_named(trained_units, collection: str, field: str | None, tmp_path: Path) -> None:
    bad = write_events(_without(synthetic_events(100, seed=3), collection, field), tmp_path / "missing.root")
    code, output = generate(trained_units, bad, tmp_path / "out.root")
    assert_clear_failure(code, output, bad, tmp_path / "out.root", collection if field is None else field)


def test_a_branch_of_the_wrong_element_type_is_refused(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(100, seed=3)
    as_bool = ak.with_field(events, ak.with_field(events.GenJet, events.GenJet.pt > 30, "pt"), "GenJet")
    bad = tmp_path / "bool.root"
    with uproot.recreate(bad) as f:  # written raw: flashsim's writer would cast to the NanoAOD types
        columns = {name: as_bool[name] for name in as_bool.fields}
        f.mktree("Events", {k: v.type for k, v in columns.items()})
        f["Events"].extend(columns)
    assert_clear_failure(*generate(trained_units, bad, tmp_path / "out.root"), bad, tmp_path / "out.root", "GenJet_pt")


def test_events_without_objects_are_simulated(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(60, seed=3)
    no_jets = ak.with_field(events, events.GenJet[:, :0], "GenJet")
    path = write_events(no_jets, tmp_path / "nojets.root")
    code, output = generate(trained_units, path, tmp_path / "out.root")
    assert code == 0, output
    out = read_events(tmp_path / "out.root")
    assert len(out) == 60 and ak.sum(ak.num(out.Jet)) == 0 and np.all(np.isfinite(ak.to_numpy(out.MET.pt)))


READ_FIELDS = [("GenJet", "pt"), ("GenJet", "eta"), ("GenJet", "phi"), ("GenJet", "mass"), ("GenJet", "hadronFlavour"),
               ("GenMET", "pt"), ("GenMET", "phi"), ("Pileup", "nTrueInt")]  # what the tiny jet + MET chain reads


def _raw(events: ak.Array, path: Path) -> Path:
    """Events written with uproot as they are (flashsim's writer would cast them to the NanoAOD types)."""
    with uproot.recreate(path) as f:
        columns = {name: events[name] for name in events.fields}
        f.mktree("Events", {k: v.type for k, v in columns.items()})
        f["Events"].extend(columns)
    return path


@pytest.mark.parametrize("collection,field", READ_FIELDS)
@pytest.mark.parametrize("wrong", ["bool", "int8"])
def test_every_read_branch_of_a_wrong_element_type_is_refused(trained_units, collection: str, field: str, wrong: str,
                                                              tmp_path: Path) -> None:
    events = synthetic_events(100, seed=3)
    values = events[collection][field]
    if str(ak.type(values)).endswith(wrong):
        pytest.skip(f"{collection}_{field} is {wrong} in NanoAOD")
    bad_values = values > 1 if wrong == "bool" else ak.values_astype(values, np.int8)
    bad = _raw(ak.with_field(events, ak.with_field(events[collection], bad_values, field), collection), tmp_path / f"{wrong}.root")
    assert_clear_failure(*generate(trained_units, bad, tmp_path / "out.root"), bad, tmp_path / "out.root", f"{collection}_{field}")


@pytest.mark.parametrize("collection,field", [f for f in READ_FIELDS if f[1] != "hadronFlavour"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_read_float_branch_refuses_non_finite_values(trained_units, collection: str, field: str, value: float,
                                                           tmp_path: Path) -> None:
    events = synthetic_events(100, seed=3)
    values = events[collection][field]
    flat = ak.to_numpy(ak.flatten(values, axis=None)).copy()
    flat[len(flat) // 2] = value
    new = ak.unflatten(flat, ak.num(values)) if values.ndim > 1 else flat
    bad = write_events(ak.with_field(events, ak.with_field(events[collection], new, field), collection), tmp_path / "bad.root")
    assert_clear_failure(*generate(trained_units, bad, tmp_path / "out.root"), bad, tmp_path / "out.root",
                         f"branch {collection}_{field}: {value}", "--on-bad-input skip")


def test_a_file_with_zero_events_is_a_clear_error(trained_units, tmp_path: Path) -> None:
    empty = write_events(synthetic_events(50, seed=3)[:0], tmp_path / "empty.root")
    assert_clear_failure(*generate(trained_units, empty, tmp_path / "out.root"), empty, tmp_path / "out.root", "zero events")


def test_a_huge_event_is_simulated(trained_units, tmp_path: Path) -> None:
    """One event with 5,000 gen jets (10x the largest in real files) among ordinary ones: simulated, finite."""
    events = synthetic_events(20, seed=3)
    rng = np.random.default_rng(5)
    n = np.array([5000] + [int(k) for k in ak.num(events.GenJet)[1:]])
    total = int(n.sum())
    big = ak.zip({"pt": ak.unflatten(rng.uniform(10, 200, total).astype(np.float32), n),
                  "eta": ak.unflatten(rng.uniform(-2.5, 2.5, total).astype(np.float32), n),
                  "phi": ak.unflatten(rng.uniform(-3, 3, total).astype(np.float32), n),
                  "mass": ak.unflatten(rng.uniform(1, 20, total).astype(np.float32), n),
                  "hadronFlavour": ak.unflatten(rng.choice(np.array([0, 4, 5], np.uint8), total), n)})
    path = write_events(ak.with_field(events, big, "GenJet"), tmp_path / "huge.root")
    code, output = generate(trained_units, path, tmp_path / "out.root")
    assert code == 0, output
    out = read_events(tmp_path / "out.root")
    assert 3000 < ak.num(out.Jet)[0] <= 5000 and np.all(np.isfinite(ak.to_numpy(ak.flatten(out.Jet.pt))))


@pytest.mark.parametrize("index", [60, -7])
def test_a_dangling_cross_reference_in_training_input_is_counted_as_unmatched(trained_units, index: int, tmp_path: Path) -> None:
    """NanoAOD's Jet_genJetIdx may point past nGenJet (GenJet is stored above 10 GeV only): such a reco jet, or one with
    an index below -1, is unmatched, and the summary says how many (the documented policy, not an error)."""
    events = synthetic_events(100, seed=3)
    jets = events.Jet
    flat = ak.to_numpy(ak.flatten(jets.genJetIdx)).copy()
    flat[np.flatnonzero(flat >= 0)[:30]] = index
    bad = write_events(ak.with_field(events, ak.with_field(jets, ak.unflatten(flat, ak.num(jets)), "genJetIdx"), "Jet"),
                       tmp_path / "dangling.root")
    outputs = {}
    for name, path in (("clean", write_events(events, tmp_path / "clean.root")), ("dangling", bad)):
        result = CliRunner().invoke(app, ["dataset", str(trained_units["tinyjet"]), "--input", str(path), "--output",
                                          str(tmp_path / f"{name}.parquet")])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        outputs[name] = " ".join(result.output.split())
    found = re.search(r"(\d+) reco objects with an out-of-range gen index treated as unmatched", outputs["dangling"])
    assert found and 20 <= int(found.group(1)) <= 30 and "out-of-range" not in outputs["clean"], outputs
    matched = [int(re.search(r"(\d+) with a reco target", outputs[k]).group(1)) for k in ("clean", "dangling")]
    assert matched[0] - matched[1] == int(found.group(1))
