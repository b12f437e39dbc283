"""Every NanoAOD version in and out: files built with each version's real branch list and types (the shipped
tables) are told apart, extracted from, simulated with ``--keep-gen`` and read by uproot, coffea and ROOT."""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from flashsim.chain import DEFAULT_CHAIN, Chain
from flashsim.locations import RUN3_CHAIN
from flashsim.datasets import extract
from flashsim.errors import ConfigError, InputError
from flashsim.events import collection_of, is_counter, to_branches
from flashsim.io import open_source, read_events, write_events
from flashsim.io.derived import add_derived
from flashsim.io.schema import VERSIONS, NanoVersion, detect_version, nano_version, versions_storing
from flashsim.unit import load_unit

from conftest import synthetic_events

COLLECTIONS = ("GenPart", "GenJet", "GenMET", "Pileup", "Jet", "Muon", "MET", "LHEPdfWeight", "PSWeight")
N_EVENTS = 300
_C_NAME = {"bool": "bool", "float32": "float", "float64": "double", **{f"{s}int{b}": f"{s}int{b}_t" for s in ("", "u") for b in (8, 16, 32, 64)}}


@pytest.fixture(scope="module")
def gen_reco() -> ak.Array:
    """A GEN+RECO record with every column the zoo units read or write: synthetic GEN through the zoo chain."""
    events = synthetic_events(N_EVENTS, seed=21)
    events = events[[f for f in events.fields if f not in ("Jet", "MET")]]
    return Chain(DEFAULT_CHAIN).run(events, seed=3)


def _filled(version: NanoVersion, branch: str, record: dict[str, ak.Array], counts: dict[str, np.ndarray]) -> ak.Array | np.ndarray:
    """Values of ``branch`` (this version's name): the record's where it has them, else a typed placeholder."""
    dtype = version.types[branch].dtype
    working = version.working_name(branch)
    if working in record:
        return ak.values_astype(record[working], dtype)
    coll = collection_of(working)
    if working == "Jet_btagDeepFlavC":  # v7: DeepJet's C probability, from the CvL the jet unit drew
        b, cvl = record["Jet_btagDeepFlavB"], record["Jet_btagDeepFlavCvL"]
        return ak.values_astype(ak.where((b >= 0) & (cvl >= 0), cvl * (1 - b), -1.0), dtype)
    if working in ("Jet_chMultiplicity", "Jet_neMultiplicity"):  # v15: the ID's inputs, from the constituents
        half = record["Jet_nConstituents"] // 2
        return ak.values_astype(half if working == "Jet_chMultiplicity" else record["Jet_nConstituents"] - half, dtype)
    if version.types[branch].jagged:
        n = counts.get(coll, np.full(N_EVENTS, 3))
        return ak.unflatten(np.ones(int(n.sum()), dtype), n)
    return np.ones(N_EVENTS, dtype)


def write_version_file(record: ak.Array, version: NanoVersion, path: Path) -> Path:
    """A file of ``version``: every branch its table lists for :data:`COLLECTIONS`, with the table's types."""
    flat = to_branches(record)
    counts = {f[1:]: np.asarray(v) for f, v in flat.items() if is_counter(f)}
    columns: dict[str, dict[str, ak.Array]] = {}
    scalars: dict[str, np.ndarray] = {k: np.asarray(record[k]) for k in ("run", "luminosityBlock", "event")}
    for branch, kind in version.types.items():
        coll = collection_of(version.working_name(branch))
        if coll not in COLLECTIONS or is_counter(branch):
            continue
        values = _filled(version, branch, flat, counts)
        if kind.jagged and "_" in branch:
            columns.setdefault(branch.split("_", 1)[0], {})[branch.split("_", 1)[1]] = values
        elif kind.jagged:  # prefix-less lists: LHEPdfWeight, PSWeight
            columns[branch] = values  # type: ignore[assignment]
        else:
            scalars[branch] = ak.to_numpy(values) if isinstance(values, ak.Array) else values
    data = {**scalars, **{k: (ak.zip(v) if isinstance(v, dict) else v) for k, v in columns.items()}}
    with uproot.recreate(path) as out:
        tree = out.mktree("Events", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in data.items()})
        tree.extend(data)
    return path


@pytest.fixture(scope="module")
def version_files(gen_reco: ak.Array, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("versions")
    return {v: write_version_file(gen_reco, nano_version(v), directory / f"nano_{v}.root") for v in VERSIONS}


def test_versions_are_told_apart(version_files: dict[str, Path]) -> None:
    for name, path in version_files.items():
        assert open_source(path).version.name == name
    for name in VERSIONS:  # each table matches itself best
        types = {b: t.dtype for b, t in nano_version(name).types.items()}
        assert detect_version(types).name == name


def test_version_names_and_errors() -> None:
    assert nano_version("12").name == nano_version("NanoAODv12").name == "v12"
    with pytest.raises(ConfigError, match=r"unknown NanoAOD version 'v13'.*known: v7, v9, v12, v15"):
        nano_version("v13")
    assert nano_version("v15").file_name("MET_pt") == "PFMET_pt"
    assert nano_version("v15").file_name("nMET") == "nPFMET"
    assert nano_version("v15").working_name("PFMET_sumEt") == "MET_sumEt"
    assert nano_version("v9").file_name("MET_pt") == "MET_pt"


def test_v7_photon_id_is_a_bitmap_both_ways(gen_reco: ak.Array, tmp_path: Path) -> None:
    """v7 stores the photon's cut-based levels as a bitmap: written as one from flashsim's level, read back as the level."""
    level = gen_reco.Photon.cutBased
    assert set(np.unique(ak.to_numpy(ak.flatten(level)))) >= {0, 3}
    out = write_events(gen_reco, tmp_path / "v7.root", version="v7")
    tree = uproot.open(out)["Events"]
    assert "Photon_cutBased" not in tree.keys() and tree.typenames()["Photon_cutBasedBitmap"] == "int32_t[]"
    bitmap = tree["Photon_cutBasedBitmap"].array()
    assert ak.all(bitmap == ak.where(level == 3, 7, ak.where(level == 2, 3, ak.where(level == 1, 1, 0))))
    assert ak.all(read_events(out).Photon.cutBased == level)


def test_reading_casts_and_renames_to_working_names(version_files: dict[str, Path]) -> None:
    v15 = read_events(version_files["v15"])
    assert "MET" in v15.fields and "PFMET" not in v15.fields
    assert str(v15.Jet.genJetIdx.type.content.content) == "int32"  # int16 in the file
    assert "jetId" in v15.Jet.fields  # derived: v15 stores none
    v7 = read_events(version_files["v7"])
    assert {"btagDeepFlavCvB", "btagDeepFlavCvL"} <= set(v7.Jet.fields)


def test_derived_branches_follow_cms_definitions() -> None:
    b = ak.Array([[0.5, -1.0, 0.2]])
    c = ak.Array([[0.25, -1.0, 0.0]])
    derived = add_derived({"Jet_btagDeepFlavB": b, "Jet_btagDeepFlavC": c})
    assert ak.to_list(derived["Jet_btagDeepFlavCvB"][0]) == pytest.approx([0.25 / 0.75, -1.0, 0.0])
    assert ak.to_list(derived["Jet_btagDeepFlavCvL"][0]) == pytest.approx([0.5, -1.0, 0.0])
    jets = {  # central tight lepton-veto; central with a muon (tight only); central with no charged; forward; very forward
        "Jet_eta": ak.Array([[0.5, 1.0, 2.0, 2.8, 3.5, 3.5]]),
        "Jet_neHEF": ak.Array([[0.2, 0.1, 0.3, 0.5, 0.1, 0.1]]),
        "Jet_neEmEF": ak.Array([[0.2, 0.1, 0.3, 0.1, 0.2, 0.6]]),
        "Jet_chHEF": ak.Array([[0.5, 0.1, 0.0, 0.0, 0.0, 0.0]]),
        "Jet_chEmEF": ak.Array([[0.1, 0.0, 0.0, 0.0, 0.0, 0.0]]),
        "Jet_muEF": ak.Array([[0.0, 0.85, 0.0, 0.0, 0.0, 0.0]]),
        "Jet_chMultiplicity": ak.Array([[5, 3, 0, 0, 0, 0]]),
        "Jet_neMultiplicity": ak.Array([[5, 1, 4, 1, 3, 3]]),
    }
    assert ak.to_list(add_derived(jets)["Jet_jetId"]) == [[6, 2, 0, 6, 6, 0]]


def test_units_say_which_versions_they_train_from_and_write() -> None:
    jet = load_unit("jet").spec.reco_branches
    assert versions_storing(jet, derived=True) == ["v7", "v9"]  # v7 derives CvB/CvL; Run-3 has no qgl
    assert versions_storing(jet) == ["v9"]
    muon = load_unit("muon").spec.reco_branches
    assert "v9" in versions_storing(muon)


@pytest.mark.parametrize("version", VERSIONS)
def test_extraction_from_every_version(version_files: dict[str, Path], version: str) -> None:
    path = version_files[version]
    for name in ("muon", "jet", "fakejet", "met"):
        unit = load_unit(name)
        if version in versions_storing(unit.spec.reco_branches, derived=True):
            assert extract(unit, path).report.matched > 0
        else:
            with pytest.raises(InputError, match=rf"NanoAOD {version} file has no .*Jet_qgl.*unit '{name}' trains on"):
                extract(unit, path)


@pytest.mark.parametrize("version", VERSIONS)
def test_keep_gen_passes_every_branch_through(version_files: dict[str, Path], version: str, tmp_path: Path) -> None:
    source = version_files[version]
    out = tmp_path / "flash.root"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Run-2 units writing Jet_qgl into Run-3 output: an extra branch, said once
        Chain(DEFAULT_CHAIN).generate(source, out, keep_gen=True)
    original = uproot.open(source)["Events"].typenames()
    written = uproot.open(out)["Events"].typenames()
    gen = [b for b in original if b.startswith(("Gen", "LHE", "PSWeight", "Pileup", "nGen", "nLHE", "nPSWeight"))]
    assert {b: written.get(b) for b in gen} == {b: original[b] for b in gen}
    table = nano_version(version).types  # flash collections take the version's types where it has the branch
    flash = [b for b in written if b.startswith(("Jet_", "Muon_", "MET_", "PFMET_")) and b in table]
    assert flash and all(written[b].removesuffix("[]") == _C_NAME[table[b].dtype.name] for b in flash)
    assert ("PFMET_pt" in written) == (version == "v15") and ("MET_pt" in written) == (version != "v15")
    gen_in = uproot.open(source)["Events"].arrays(["LHEPdfWeight", "GenPart_statusFlags"])
    gen_out = uproot.open(out)["Events"].arrays(["LHEPdfWeight", "GenPart_statusFlags"])
    assert ak.to_list(gen_out) == ak.to_list(gen_in)


def test_nano_version_asked_for_sets_names_and_types(version_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "v15.root"
    with pytest.warns(UserWarning, match=r"NanoAOD v15 has no Jet_qgl \(units jet, fakejet\); Jet_jetId \(units jet, fakejet\): written as extra branches$"):
        Chain(DEFAULT_CHAIN).generate(version_files["v9"], out, keep_gen=True, nano_version="v15")
    types = uproot.open(out)["Events"].typenames()
    assert types["Jet_genJetIdx"] == "int16_t[]" and types["GenPart_statusFlags"] == "uint16_t[]"
    assert "PFMET_pt" in types and "MET_pt" not in types and "PuppiMET_pt" in types
    assert "Photon_mass" not in types  # Run 3 stores none (photons are massless): left out, 0 again on read
    photons = read_events(out).Photon
    assert ak.sum(ak.num(photons)) > 0 and ak.all(ak.flatten(photons.mass) == 0) and str(photons.mass.type.content) == "var * float32"


def test_readers_read_every_version(version_files: dict[str, Path], tmp_path: Path) -> None:
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    ROOT = pytest.importorskip("ROOT", reason="ROOT is part of the test extra; install with `make test`")
    for version, source in version_files.items():
        out = tmp_path / f"flash_{version}.root"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Chain(DEFAULT_CHAIN).generate(source, out, keep_gen=True)
            nano = NanoEventsFactory.from_root({str(out): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
            matched = nano.Jet.matched_gen
        jets = uproot.open(out)["Events"].arrays(["Jet_pt", "Jet_genJetIdx"])
        assert ak.sum(~ak.is_none(matched.pt, axis=1)) == ak.sum(jets.Jet_genJetIdx >= 0) > 0, version
        total = ROOT.RDataFrame("Events", str(out)).Define("s", "Sum(Jet_pt)").Sum("s").GetValue()
        assert total == pytest.approx(float(ak.sum(ak.values_astype(jets.Jet_pt, np.float64))), rel=1e-6), version


def test_partitions_and_their_merge_keep_the_version(version_files: dict[str, Path], tmp_path: Path) -> None:
    from flashsim.distributed import generate_partitions, merge_outputs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manifest = generate_partitions(list(DEFAULT_CHAIN), str(version_files["v12"]), tmp_path / "parts", partition_size=120,
                                       keep_gen=True)
    assert {p["nano_version"] for p in manifest.partitions} == {"v12"}
    merged = uproot.open(merge_outputs(manifest.path)[0])["Events"].typenames()
    assert merged["Jet_genJetIdx"] == "int16_t[]" and merged["LHEPdfWeight"] == uproot.open(version_files["v12"])["Events"].typenames()["LHEPdfWeight"]


def test_derived_ratios_stay_probabilities_under_float32_rounding() -> None:
    b = ak.Array([np.full(1000, 1e-4, np.float32)])
    c = ak.values_astype(1 - b - ak.Array([np.linspace(0, 1e-6, 1000, dtype=np.float32)]), np.float32)
    derived = add_derived({"Jet_btagDeepFlavB": b, "Jet_btagDeepFlavC": c})
    assert ak.max(derived["Jet_btagDeepFlavCvL"]) <= 1.0 and ak.max(derived["Jet_btagDeepFlavCvB"]) <= 1.0


def test_cli_nano_version(version_files: dict[str, Path], tmp_path: Path) -> None:
    from test_cli import assert_one_error_line, run

    code, output = run("generate", "--chain", "muon", "-i", version_files["v12"], "-o", tmp_path / "out.root", "--nano-version", "v13")
    assert_one_error_line(code, output, "unknown NanoAOD version 'v13'", "v12")
    assert not (tmp_path / "out.root").exists()
    code, output = run("generate", "--chain", "muon", "-i", version_files["v12"], "-o", tmp_path / "out.root", "--nano-version", "15")
    assert code == 0 and "(NanoAOD v15)" in output, output
    assert "Muon_genPartIdx" in uproot.open(tmp_path / "out.root")["Events"].keys()


def test_run3_chain_writes_nanoaod_v15(version_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "flash_v15.root"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every branch the Run-3 units write is one NanoAOD v15 has: no warning
        Chain(RUN3_CHAIN).generate(version_files["v15"], out, keep_gen=True)
    types = uproot.open(out)["Events"].typenames()
    assert {"Jet_btagPNetB", "Jet_btagPNetQvG", "Jet_chMultiplicity", "PFMET_pt", "PuppiMET_pt", "Electron_mvaIso",
            "Photon_pfRelIso03_all_quadratic", "Jet_electronIdx1"} <= set(types)
    assert not {"Jet_qgl", "Jet_jetId", "MET_pt", "Electron_mvaFall17V2Iso"} & set(types)
    assert types["Jet_chMultiplicity"] == "uint8_t[]" and types["Jet_genJetIdx"] == "int16_t[]"
    flash = read_events(out)
    assert set(np.unique(ak.to_numpy(ak.flatten(flash.Jet.jetId)))) <= {0, 2, 6}  # derived on read, as v15 readers must
    fractions = flash.Jet.chHEF + flash.Jet.neHEF + flash.Jet.chEmEF + flash.Jet.neEmEF + flash.Jet.muEF
    assert ak.all(fractions <= 1 + 1e-5) and ak.all(flash.Jet.pt >= 15)
    assert versions_storing(load_unit("jet_run3").spec.reco_branches, derived=True) == ["v15"]


def test_run3_chain_writes_v12_with_the_jet_id_it_stores(version_files: dict[str, Path], tmp_path: Path) -> None:
    """v12 stores Jet_jetId and no multiplicities: the writer computes the ID from the Run-3 jet unit's fractions and
    multiplicities (JME's rule), and the multiplicities go out as extra branches, with a warning."""
    out = tmp_path / "flash_v12.root"
    with pytest.warns(UserWarning, match=r"NanoAOD v12 has no Jet_chMultiplicity \(units jet_run3, fakejet_run3\); Jet_neMultiplicity"):
        Chain(RUN3_CHAIN).generate(version_files["v12"], out, keep_gen=True)
    tree = uproot.open(out)["Events"]
    assert tree.typenames()["Jet_jetId"] == "uint8_t[]" and "PuppiMET_pt" in tree.keys() and "Photon_mass" not in tree.keys()
    jets = read_events(out).Jet
    derived = add_derived({f"Jet_{f}": jets[f] for f in ("eta", "neHEF", "neEmEF", "chHEF", "chEmEF", "muEF", "chMultiplicity",
                                                          "neMultiplicity")})["Jet_jetId"]
    assert ak.sum(ak.num(jets)) > 0 and ak.all(jets.jetId == derived)


@pytest.mark.parametrize("counter, index, run", [("i", "I", 2), ("I", "S", 3)])
def test_root_written_counters_and_indices_of_each_run(tmp_path: Path, counter: str, index: str, run: int) -> None:
    """Files written by ROOT itself with Run-2 (uint32 counter, int32 index) and Run-3 (int32, int16) leaf types."""
    ROOT = pytest.importorskip("ROOT", reason="ROOT is part of the test extra; install with `make test`")
    from array import array

    path = tmp_path / f"root_run{run}.root"
    out = ROOT.TFile(str(path), "RECREATE")
    tree = ROOT.TTree("Events", "Events")
    n_jet, n_gen = array("I" if counter == "i" else "i", [0]), array("i", [0])  # ROOT i: UInt_t, I: Int_t, S: Short_t
    pt, idx = array("f", [0.0] * 8), array("i" if index == "I" else "h", [0] * 8)
    gen_pt = array("f", [0.0] * 8)
    tree.Branch("nJet", n_jet, f"nJet/{counter}")
    tree.Branch("Jet_pt", pt, "Jet_pt[nJet]/F")
    tree.Branch("Jet_genJetIdx", idx, f"Jet_genJetIdx[nJet]/{index}")
    tree.Branch("nGenJet", n_gen, "nGenJet/I")
    tree.Branch("GenJet_pt", gen_pt, "GenJet_pt[nGenJet]/F")
    for event in range(5):
        n_jet[0], n_gen[0] = event % 3, 2
        for j in range(n_jet[0]):
            pt[j], idx[j] = 20.0 + j, j - 1
        gen_pt[0], gen_pt[1] = 25.0, 30.0
        tree.Fill()
    out.Write()
    out.Close()
    written = uproot.open(path)["Events"].typenames()
    assert (written["nJet"], written["Jet_genJetIdx"]) == (("uint32_t", "int32_t[]") if run == 2 else ("int32_t", "int16_t[]"))
    assert open_source(path).version.run == run  # these few branches cannot tell v7 from v9 nor v12 from v15
    events = read_events(path)
    assert ak.to_list(ak.num(events.Jet)) == [0, 1, 2, 0, 1]
    assert ak.to_list(events.Jet.genJetIdx) == [[], [-1], [-1, 0], [], [-1]]
    assert str(events.Jet.genJetIdx.type.content.content) == "int32"
