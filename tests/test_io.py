"""Round trips, third-party readers and bad-input errors of the NanoAOD reader/writer."""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from flashsim.errors import InputError
from flashsim.io import NanoAODWriter, iterate_events, read_events, write_events

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64, np.float32, np.float64]
FORMATS = ["root", "parquet"]


def _jagged(counts: np.ndarray, values: np.ndarray) -> ak.Array:
    return ak.unflatten(values, counts)


def _sample(n: int, rng: np.random.Generator, empty: bool = False) -> ak.Array:
    """A small NanoAOD-like event record with GEN and RECO jets and muons."""
    counts = np.zeros(n, np.int64) if empty else rng.integers(0, 5, n)
    total = int(counts.sum())
    ngen = counts + (0 if empty else 1)
    gtotal = int(ngen.sum())
    gen = ak.zip({
        "pt": _jagged(ngen, rng.exponential(30, gtotal).astype(np.float32) + 10),
        "eta": _jagged(ngen, rng.normal(0, 2, gtotal).astype(np.float32)),
        "phi": _jagged(ngen, rng.uniform(-np.pi, np.pi, gtotal).astype(np.float32)),
        "mass": _jagged(ngen, rng.uniform(0, 10, gtotal).astype(np.float32)),
        "hadronFlavour": _jagged(ngen, rng.choice([0, 4, 5], gtotal).astype(np.uint8)),
        "partonFlavour": _jagged(ngen, rng.choice([0, 1, 21, 5], gtotal).astype(np.int32)),
    })
    local = ak.local_index(_jagged(counts, np.zeros(total)))
    jet = ak.zip({
        "pt": _jagged(counts, rng.exponential(30, total).astype(np.float32) + 15),
        "eta": _jagged(counts, rng.normal(0, 2, total).astype(np.float32)),
        "phi": _jagged(counts, rng.uniform(-np.pi, np.pi, total).astype(np.float32)),
        "mass": _jagged(counts, rng.uniform(0, 10, total).astype(np.float32)),
        "genJetIdx": ak.values_astype(ak.where(local % 2 == 0, local, -1), np.int32),
        "jetId": _jagged(counts, rng.choice([0, 2, 6], total).astype(np.int32)),
    })
    return ak.zip({
        "run": np.ones(n, np.uint32),
        "luminosityBlock": np.ones(n, np.uint32),
        "event": np.arange(n, dtype=np.uint64),
        "GenJet": gen,
        # coffea's NanoAODSchema drops every gen cross-reference of a file without GenPart
        "GenPart": ak.zip({
            "pt": _jagged(ngen, rng.exponential(30, gtotal).astype(np.float32)),
            "eta": _jagged(ngen, rng.normal(0, 2, gtotal).astype(np.float32)),
            "phi": _jagged(ngen, rng.uniform(-np.pi, np.pi, gtotal).astype(np.float32)),
            "mass": _jagged(ngen, np.zeros(gtotal, np.float32)),
            "pdgId": _jagged(ngen, rng.choice([13, -13, 5, 21], gtotal).astype(np.int32)),
            "status": _jagged(ngen, np.ones(gtotal, np.int32)),
            "statusFlags": _jagged(ngen, np.ones(gtotal, np.int32)),
            "genPartIdxMother": _jagged(ngen, np.full(gtotal, -1, np.int32)),
        }),
        "Jet": jet,
        "MET": ak.zip({"pt": rng.exponential(20, n).astype(np.float32), "phi": rng.uniform(-3, 3, n).astype(np.float32)}, depth_limit=1),
        "Pileup": ak.zip({"nTrueInt": rng.uniform(20, 50, n).astype(np.float32), "nPU": rng.poisson(35, n).astype(np.int32)}, depth_limit=1),
    }, depth_limit=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_round_trips(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 4, 50)
    fields = {}
    for dtype in DTYPES:
        name = np.dtype(dtype).name
        if dtype is np.bool_:
            flat = rng.integers(0, 2, int(counts.sum())).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            flat = rng.integers(info.min, info.max, int(counts.sum()), dtype=dtype, endpoint=True)
        else:
            flat = rng.normal(0, 1e3, int(counts.sum())).astype(dtype)
        fields[name] = _jagged(counts, flat)
    events = ak.zip({
        "Obj": ak.zip(fields),
        "Single": ak.zip({k: v[:, :1] for k, v in fields.items()}),
        **{f"scalar{np.dtype(d).name}": ak.to_numpy(ak.fill_none(ak.firsts(fields[np.dtype(d).name]), 0)).astype(d) for d in DTYPES},
    }, depth_limit=1)
    path = write_events(events, tmp_path / f"dtypes.{fmt}")
    back = read_events(path)
    for name in fields:
        assert back.Obj[name].type.content.content == events.Obj[name].type.content.content
        assert ak.all(back.Obj[name] == events.Obj[name])
        assert ak.array_equal(back[f"scalar{name}"], events[f"scalar{name}"])
        assert back[f"scalar{name}"].type.content == events[f"scalar{name}"].type.content


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("empty", [False, True])
def test_nanoaod_round_trip_and_types(tmp_path: Path, fmt: str, empty: bool) -> None:
    events = _sample(300, np.random.default_rng(2), empty=empty)
    path = write_events(events, tmp_path / f"ev.{fmt}")
    back = read_events(path)
    assert ak.array_equal(back.Jet.pt, events.Jet.pt)
    assert ak.array_equal(back.GenJet.hadronFlavour, events.GenJet.hadronFlavour)
    assert str(back.GenJet.hadronFlavour.type.content.content) == "uint8"
    assert str(back.Jet.genJetIdx.type.content.content) == "int32"
    assert str(back.event.type.content) == "uint64"
    assert str(back.Pileup.nTrueInt.type.content) == "float32"
    assert ak.sum(ak.num(back.Jet)) == ak.sum(ak.num(events.Jet))
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunked_iteration_covers_every_event_once(tmp_path: Path, fmt: str) -> None:
    events = _sample(1000, np.random.default_rng(3))
    with NanoAODWriter(tmp_path / f"ev.{fmt}") as writer:
        for start in range(0, 1000, 250):
            writer.write(events[start : start + 250])
    chunks = list(iterate_events(tmp_path / f"ev.{fmt}", step_size=300, collections=["Jet", "event"]))
    assert [len(c) for c in chunks] == [300, 300, 300, 100]
    assert chunks[0].fields == ["Jet", "event"] or set(chunks[0].fields) == {"Jet", "event"}
    assert np.array_equal(np.concatenate([ak.to_numpy(c.event) for c in chunks]), np.arange(1000))


def test_writer_cast_reads_other_nanoaod_versions(tmp_path: Path) -> None:
    """A v9-style file (uint32 counters, int16 index, uint16 flags) reads back with the canonical types."""
    counts = np.array([2, 0, 1], np.int64)
    with uproot.recreate(tmp_path / "v9.root") as f:
        tree = f.mktree("Events", {"Jet": ak.zip({"pt": _jagged(counts, np.ones(3, np.float32)), "genJetIdx": _jagged(counts, np.array([0, -1, 1], np.int16))}).type, "event": np.uint64})
        tree.extend({"Jet": ak.zip({"pt": _jagged(counts, np.ones(3, np.float32)), "genJetIdx": _jagged(counts, np.array([0, -1, 1], np.int16))}), "event": np.arange(3, dtype=np.uint64)})
    back = read_events(tmp_path / "v9.root")
    assert str(back.Jet.genJetIdx.type.content.content) == "int32"
    assert ak.to_list(back.Jet.genJetIdx) == [[0, -1], [], [1]]


def test_coffea_reads_output_with_matched_gen(tmp_path: Path) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    events = _sample(200, np.random.default_rng(4))
    path = write_events(events, tmp_path / "ev.root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = nano.Jet.matched_gen
    expected = ak.where(events.Jet.genJetIdx >= 0, events.GenJet.pt[ak.where(events.Jet.genJetIdx >= 0, events.Jet.genJetIdx, 0)], np.nan)
    got = ak.fill_none(matched.pt, np.nan)
    assert ak.all((got == expected) | (np.isnan(got) & np.isnan(expected)))
    assert ak.sum(~ak.is_none(matched.pt, axis=1)) == ak.sum(events.Jet.genJetIdx >= 0)


def test_root_rdataframe_reads_multibasket_file(tmp_path: Path) -> None:
    ROOT = pytest.importorskip("ROOT", reason="ROOT is part of the test extra; install with `make test`")
    n, step = 240_000, 60_000
    events = _sample(n, np.random.default_rng(5))
    with NanoAODWriter(tmp_path / "big.root") as writer:
        for start in range(0, n, step):
            writer.write(events[start : start + step])
    assert len(uproot.open(tmp_path / "big.root")["Events"]["Jet_pt"].member("fBasketEntry")) > 3
    df = ROOT.RDataFrame("Events", str(tmp_path / "big.root"))
    total = df.Define("s", "Sum(Jet_pt[Jet_genJetIdx >= 0])").Sum("s").GetValue()
    expected = float(ak.sum(ak.values_astype(events.Jet.pt[events.Jet.genJetIdx >= 0], np.float64)))
    assert total == pytest.approx(expected, rel=1e-6)
    assert df.Count().GetValue() == n


# ---- bad input -------------------------------------------------------------------------------


def test_missing_branch_names_file_and_branch(tmp_path: Path) -> None:
    path = write_events(_sample(10, np.random.default_rng(6)), tmp_path / "ev.root")
    with pytest.raises(InputError, match=r"ev\.root.*'Jet_btagDeepFlavB' not found"):
        read_events(path, branches=["Jet_btagDeepFlavB"])
    with pytest.raises(InputError, match=r"ev\.root.*collection 'Muon'"):
        read_events(path, collections=["Muon"])


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    path = write_events(_sample(5000, np.random.default_rng(7)), tmp_path / "ev.root")
    data = path.read_bytes()
    (tmp_path / "cut.root").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.root"):
        read_events(tmp_path / "cut.root")


def test_zero_events_and_wrong_tree(tmp_path: Path) -> None:
    with uproot.recreate(tmp_path / "zero.root") as f:
        f.mktree("Events", {"event": np.uint64})
        f.mktree("Other", {"x": np.float32}).extend({"x": np.ones(3, np.float32)})
    with pytest.raises(InputError, match=r"zero\.root.*zero events"):
        read_events(tmp_path / "zero.root")
    with pytest.raises(InputError, match=r"no TTree 'Nope' \(found: .*Events"):
        read_events(tmp_path / "zero.root", tree="Nope")


def test_wrong_dtype_names_branch_and_expectation(tmp_path: Path) -> None:
    with uproot.recreate(tmp_path / "bad.root") as f:
        f.mktree("Events", {"Jet_pt": np.float32}).extend({"Jet_pt": np.ones(4, np.float32)})
    with pytest.raises(InputError, match=r"bad\.root.*'Jet_pt'.*expected one list per event of float32"):
        read_events(tmp_path / "bad.root")


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    events = _sample(20, np.random.default_rng(8))
    with pytest.raises(RuntimeError):
        with NanoAODWriter(tmp_path / "out.root") as writer:
            writer.write(events)
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="differ from the first chunk"):
        with NanoAODWriter(tmp_path / "out.parquet") as writer:
            writer.write(events)
            writer.write(events[["Jet", "event"]])
    assert list(tmp_path.iterdir()) == []


def test_missing_input_glob(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no input file matches"):
        read_events(str(tmp_path / "gen_*.root"))
