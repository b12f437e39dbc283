"""``flashsim gen`` / ``flashsim simulate`` and the generator readers: Pythia8 cards, LHE showered by Pythia8, HepMC3.

Inputs are made in the test: HepMC3 events built by hand with pyhepmc's writer, LHE files written as text,
Pythia cards of a few lines (a few dozen events at most).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from typer.testing import CliRunner

from flashsim.cli import app
from flashsim.errors import InputError
from flashsim.generators import GenSource, input_kind
from flashsim.locations import RUN3_CHAIN
from flashsim.refsim import DetectorParams

pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")
pyhepmc = pytest.importorskip("pyhepmc")
pytest.importorskip("pythia8mc")

CARDS = Path(__file__).resolve().parents[1] / "flashsim" / "cards"
GEN_BRANCHES = {"run", "luminosityBlock", "event", "genWeight", "Pileup_nTrueInt", "Pileup_nPU", "GenMET_pt", "nGenJet",
                "GenJet_pt", "GenJet_hadronFlavour", "nGenPart", "GenPart_pt", "GenPart_pdgId", "GenPart_statusFlags"}


def run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_error(code: int, output: str, *names: str) -> None:
    """Exit 1 with one ``error:`` line (no traceback) naming each of ``names``."""
    assert code == 1, output
    errors = [line for line in output.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output
    for name in names:
        assert name in errors[0], (name, output)


def assert_nothing_written(directory: Path, output: Path) -> None:
    assert not output.exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(("." + output.name, output.name + "."))]


# ------------------------------------------------------------------------------------------- HepMC3 files ---

def _muon(pt: float, eta: float, phi: float, pid: int) -> object:
    m = 0.10566
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return pyhepmc.GenParticle((px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)), pid, 1)


def dimuon_event(number: int, pts: tuple[float, float] = (40.0, 25.0), weight: float = 2.5, unit: str = "GEV") -> object:
    """p p -> Z (status 22) -> mu+ mu- (status 1), the Z's vertex displaced by nothing."""
    scale = 1000.0 if unit == "MEV" else 1.0
    event = pyhepmc.GenEvent(getattr(pyhepmc.Units, unit), pyhepmc.Units.MM)
    event.event_number = number
    beams = [pyhepmc.GenParticle((0, 0, s * 6800 * scale, 6800 * scale), 2212, 4) for s in (1, -1)]
    mu1, mu2 = _muon(pts[0], 0.5, 1.0, 13), _muon(pts[1], -1.2, -2.0, -13)
    p = [a + b for a, b in zip(mu1.momentum, mu2.momentum)]
    z = pyhepmc.GenParticle(p, 23, 22)
    for mu in (mu1, mu2):
        mu.momentum = pyhepmc.FourVector(*[c * scale for c in mu.momentum])
    z.momentum = pyhepmc.FourVector(*[c * scale for c in p])
    hard, decay = pyhepmc.GenVertex(), pyhepmc.GenVertex()
    for b in beams:
        hard.add_particle_in(b)
    hard.add_particle_out(z)
    decay.add_particle_in(z)
    decay.add_particle_out(mu1)
    decay.add_particle_out(mu2)
    event.add_vertex(hard)
    event.add_vertex(decay)
    event.weights = [weight]
    return event


def write_hepmc(path: Path, events: list) -> Path:
    with pyhepmc.open(path, "w") as f:
        for e in events:
            f.write(e)
    return path


@pytest.fixture(scope="module")
def hepmc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hepmc(tmp_path_factory.mktemp("hepmc") / "dimuon.hepmc3", [dimuon_event(7 + k) for k in range(3)])


def test_hepmc_two_muons_become_two_genpart_muons(hepmc_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen.root"
    code, output = run("gen", hepmc_file, "-o", out, "--run", 3, "--lumi", 4)
    assert code == 0, output
    assert output.strip().splitlines()[-1].startswith("wrote 3 events")
    tree = uproot.open(out)["Events"]
    assert GEN_BRANCHES <= set(tree.keys())
    ev = tree.arrays()
    assert ev.event.tolist() == [7, 8, 9] and set(ev.run.tolist()) == {3} and set(ev.luminosityBlock.tolist()) == {4}
    assert np.allclose(ev.genWeight, 2.5)
    muons = ev.GenPart_pt[abs(ev.GenPart_pdgId) == 13]
    assert ak.num(muons).tolist() == [2, 2, 2]
    assert np.allclose(ak.to_numpy(muons), [[40.0, 25.0]] * 3, rtol=1e-5)
    z = ev.GenPart_pdgId == 23
    assert ak.sum(z, axis=1).tolist() == [1, 1, 1]
    # the muons point to the Z (their mother), are prompt and last copies; the Z is a hard-process particle
    mothers = ev.GenPart_genPartIdxMother[abs(ev.GenPart_pdgId) == 13]
    assert ak.all(ev.GenPart_pdgId[mothers] == 23)
    assert ak.all(ev.GenPart_statusFlags[abs(ev.GenPart_pdgId) == 13] & ((1 << 0) | (1 << 13)) == (1 << 0) | (1 << 13))
    assert ak.all((ev.GenPart_statusFlags[z] >> 7) & 1 == 1)
    assert ak.all(ev.Pileup_nTrueInt > 0)


def test_hepmc_blocks_parse_alone(hepmc_file: Path) -> None:
    """A block of a HepMC3 file is the header and its events' lines: parsed alone, it gives those events."""
    from flashsim.generators.hepmc import HepMCBlocks, hepmc_events

    blocks = HepMCBlocks(hepmc_file)
    assert [e.event_number for e in hepmc_events(hepmc_file, blocks.block(1, 2), 1)] == [8]
    assert [e.event_number for e in hepmc_events(hepmc_file, blocks.block(2, 3), 2)] == [9]
    with pytest.raises(ValueError, match="behind"):
        blocks.block(0, 1)
    blocks.close()


def test_hepmc_gzip_mev_and_unnumbered_events(tmp_path: Path) -> None:
    path = tmp_path / "mev.hepmc3.gz"
    plain = write_hepmc(tmp_path / "mev.hepmc3", [dimuon_event(0, unit="MEV"), dimuon_event(0, unit="MEV")])
    path.write_bytes(gzip.compress(plain.read_bytes()))
    chunks = list(GenSource(path, pileup=0).chunks())
    ev = ak.concatenate(chunks)
    assert ev.event.tolist() == [1, 2]  # no numbers in the file: numbered in file order
    assert np.allclose(ak.to_numpy(ev.GenPart.pt[abs(ev.GenPart.pdgId) == 13]), [[40.0, 25.0]] * 2, rtol=1e-5)
    assert ak.all(ev.Pileup.nPU == 0)


def _hepmc_status(status: int, pid: int) -> int:
    """HepMC status of a Pythia particle, as Pythia8ToHepMC writes it (1 final, 2 decayed hadron or tau, 4 beam)."""
    if status > 0:
        return 1
    if status == -12:
        return 4
    return 2 if (abs(pid) > 100 or abs(pid) == 15) and status <= -81 else abs(status)


def _pythia_mothers(ev, i: int) -> list[int]:
    """Mothers of flat particle ``i`` in its event's local numbering (a range for string fragments, as Pythia says)."""
    m1, m2, status = int(ev.m1[i]), int(ev.m2[i]), abs(int(ev.status[i]))
    if m1 <= 0:
        return []
    if m2 > m1 and (81 <= status <= 86 or 101 <= status <= 106):
        return list(range(m1, m2 + 1))
    return [m1, m2] if m2 > 0 and m2 != m1 else [m1]


def pythia_to_hepmc(ev, k: int) -> object:  # noqa: C901  (a test helper: Pythia record -> HepMC graph)
    """Event ``k`` of a refsim FlatEvents batch as a HepMC3 event: one vertex per group of mothers sharing daughters,
    vertices added parents first."""
    start = int(np.sum(ev.counts[:k]))
    n = int(ev.counts[k])
    event = pyhepmc.GenEvent(pyhepmc.Units.GEV, pyhepmc.Units.MM)
    event.event_number = k + 1
    parts = [None] + [pyhepmc.GenParticle((ev.px[i], ev.py[i], ev.pz[i], ev.e[i]), int(ev.pid[i]),
                                          _hepmc_status(int(ev.status[i]), int(ev.pid[i]))) for i in range(start + 1, start + n)]
    group = list(range(n))  # union-find: mothers of one particle share its production vertex

    def find(x: int) -> int:
        while group[x] != x:
            group[x] = group[group[x]]
            x = group[x]
        return x

    mothers = {j: m for j in range(1, n) if (m := _pythia_mothers(ev, start + j))}
    for ms in mothers.values():
        for m in ms[1:]:
            group[find(m)] = find(ms[0])
    vertices: dict[int, object] = {}
    ins: dict[int, set[int]] = {}
    for j, ms in mothers.items():
        root = find(ms[0])
        if root not in vertices:
            vertices[root] = pyhepmc.GenVertex(pyhepmc.FourVector(ev.vx[start + j], ev.vy[start + j], ev.vz[start + j], 0.0))
        vertices[root].add_particle_out(parts[j])
        ins.setdefault(root, set()).update(ms)
    for root, ms in ins.items():
        for m in ms:
            vertices[root].add_particle_in(parts[m])
    placed: list[int] = []

    def place(root: int) -> None:  # HepMC3 writes vertices in the order added: parents first
        if root in placed:
            return
        for m in ins[root]:
            if m in mothers and find(mothers[m][0]) != root:
                place(find(mothers[m][0]))
        placed.append(root)

    for root in vertices:
        place(root)
    for root in placed:
        event.add_vertex(vertices[root])
    return event


def test_pythia_events_through_hepmc_give_refsims_gen(tmp_path: Path) -> None:
    """Pythia ttbar events written as HepMC3 and read back: GenJet, GenMET and GenPart as refsim builds them from
    Pythia's record (HepMC keeps no hard-process status for final particles: those three flags are left out)."""
    from flashsim.generators.hepmc import read_hepmc
    from flashsim.refsim import DetectorParams, Generator, build_gen

    ev = Generator("ttbar", seed=3).batch(3)
    path = write_hepmc(tmp_path / "ttbar.hepmc3", [pythia_to_hepmc(ev, k) for k in range(ev.n_events)])
    (batch,) = list(read_hepmc(path))
    direct, via = build_gen(ev, DetectorParams()), build_gen(batch.events, DetectorParams())
    assert batch.numbers.tolist() == [1, 2, 3]
    for name in ("GenJet", "GenMET"):
        for field in direct[name].fields:
            assert np.allclose(ak.to_numpy(ak.flatten(direct[name][field], axis=None)),
                               ak.to_numpy(ak.flatten(via[name][field], axis=None)), rtol=1e-5), (name, field)
    hard_bits = (1 << 7) | (1 << 8) | (1 << 11)

    def genparts(gen: dict, k: int) -> list[tuple]:
        g = gen["GenPart"][k]
        flags = np.where(g.status.to_numpy() == 1, g.statusFlags.to_numpy() & ~hard_bits, g.statusFlags.to_numpy())
        return sorted(zip(g.pdgId.tolist(), np.round(g.pt.to_numpy(), 3).tolist(), g.status.tolist(), flags.tolist()))

    for k in range(ev.n_events):
        assert genparts(direct, k) == genparts(via, k)


# ---------------------------------------------------------------------------------------------- LHE files ---
HEADER = """<LesHouchesEvents version="3.0">
<header>
<MGRunCard>
 {ickkw} = ickkw ! matching
 {xqcut} = xqcut ! minimum kt jet measure between partons
{card}</MGRunCard>
<initrwgt>
<weightgroup name="Central scale variation" combine="envelope">
<weight id="1001"> mur=1 muf=1 </weight>
<weight id="1002"> mur=2 muf=1 </weight>
<weight id="1003"> mur=0.5 muf=1 </weight>
</weightgroup>
<weightgroup name="NNPDF31_nnlo_hessian_pdfas" combine="hessian">
<weight id="2001"> PDF=306000 </weight>
<weight id="2002"> PDF=306001 </weight>
</weightgroup>
</initrwgt>
</header>
<init>
2212 2212 6.500000e+03 6.500000e+03 0 0 303600 303600 3 1
1.0e+02 1.0e+00 1.0e+02 1
</init>
"""


def _line(pid, st, m1, m2, c1, c2, p, m, spin=9):
    return f"{pid} {st} {m1} {m2} {c1} {c2} {p[0]:.10e} {p[1]:.10e} {p[2]:.10e} {p[3]:.10e} {m:.10e} 0 {spin}"


def _boost_z(p, beta):
    g = 1 / np.sqrt(1 - beta**2)
    return np.array([p[0], p[1], g * (p[2] + beta * p[3]), g * (p[3] + beta * p[2])])


def lhe_text(n=5, ickkw=0, xqcut=0.0, seed=1, jets=(1,), card="", nlo=False):
    """u u~ -> Z(-> mu+ mu-) g events (balanced in pT), or u u~ -> Z(-> mu+ mu-) where the cycle ``jets`` says 0, with
    three scale and two PDF weights each; ``card``: more run-card lines; ``nlo``: events carry MadGraph5_aMC@NLO's npNLO."""
    rng = np.random.default_rng(seed)
    out = [HEADER.format(ickkw=ickkw, xqcut=xqcut, card=card)]
    mz, mmu = 91.19, 0.10566
    for k in range(n):
        jet = jets[k % len(jets)]
        ptg = rng.uniform(20, 60) if jet else 0.0
        pzz, pzg = rng.uniform(-100, 100, 2)
        pz_ = np.array([ptg, 0.0, pzz, np.sqrt(ptg**2 + pzz**2 + mz**2)])
        pg = np.array([-ptg, 0.0, pzg, np.hypot(ptg, pzg)]) if jet else np.zeros(4)
        tot = pz_ + pg
        e1, e2 = (tot[3] + tot[2]) / 2, (tot[3] - tot[2]) / 2
        # Z -> mu mu: in the Z rest frame along a random direction, then boosted with the Z
        cth, phi = rng.uniform(-1, 1), rng.uniform(-np.pi, np.pi)
        sth = np.sqrt(1 - cth**2)
        pstar = np.sqrt((mz / 2) ** 2 - mmu**2)
        d = np.array([sth * np.cos(phi), sth * np.sin(phi), cth]) * pstar
        mus = []
        b = pz_[:3] / pz_[3]
        b2 = b @ b
        g = 1 / np.sqrt(1 - b2)
        for s in (1, -1):
            p3, e = s * d, mz / 2
            bp = b @ p3
            p3b = p3 + ((g - 1) * bp / b2 + g * e) * b
            mus.append(np.r_[p3b, g * (e + bp)])
        xw = 100.0 * rng.uniform(0.5, 1.5)
        colours = (501, 0, 0, 502) if jet else (501, 0, 0, 501)
        lines = [
            f"{5 + jet} 1 {xw:.10e} 9.1e+01 7.5e-03 1.3e-01",
            _line(2, -1, 0, 0, colours[0], colours[1], [0, 0, e1, e1], 0.0),
            _line(-2, -1, 0, 0, colours[2], colours[3], [0, 0, -e2, e2], 0.0),
            _line(23, 2, 1, 2, 0, 0, pz_, mz),
            *([_line(21, 1, 1, 2, 501, 502, pg, 0.0)] if jet else []),
            _line(-13, 1, 3, 3, 0, 0, mus[0], mmu, 1),
            _line(13, 1, 3, 3, 0, 0, mus[1], mmu, -1),
        ]
        wgts = {"1001": xw, "1002": 0.9 * xw, "1003": 1.1 * xw, "2001": xw, "2002": 1.02 * xw}
        rw = "<rwgt>\n" + "\n".join(f"<wgt id='{k}'> {v:.6e} </wgt>" for k, v in wgts.items()) + "\n</rwgt>"
        tag = f'<event npLO=" -1 " npNLO=" {jet} ">' if nlo else "<event>"
        out.append(tag + "\n" + "\n".join(lines) + "\n" + rw + "\n</event>\n")
    out.append("</LesHouchesEvents>\n")
    return "".join(out)


def write_lhe(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_lhe_showered_keeps_the_cms_lhe_branches(tmp_path: Path) -> None:
    lhe = write_lhe(tmp_path / "zg.lhe.gz", lhe_text(6))
    out = tmp_path / "gen.parquet"
    code, output = run("gen", lhe, "-o", out, "--seed", 3, "--events", 5)
    assert code == 0, output
    ev = ak.from_parquet(out)
    assert GEN_BRANCHES <= set(ev.fields)
    assert {"nLHEPart", "LHEPart_pt", "LHEPart_eta", "LHEPart_phi", "LHEPart_mass", "LHEPart_pdgId", "LHEPart_status",
            "LHEPart_incomingpz", "LHEPart_spin", "LHE_HT", "LHE_Njets", "LHEWeight_originalXWGTUP",
            "LHEScaleWeight", "LHEPdfWeight"} <= set(ev.fields)
    assert len(ev) == 5 and ev.event.tolist() == [1, 2, 3, 4, 5]
    assert ev.nLHEPart.tolist() == [5] * 5  # two incoming partons, the gluon and the two muons (not the Z)
    assert ev.LHEPart_status.tolist()[0] == [-1, -1, 1, 1, 1]
    gluon = ev.LHEPart_pt[ev.LHEPart_pdgId == 21]
    assert np.allclose(ak.to_numpy(ak.flatten(gluon)), ak.to_numpy(ev.LHE_HT)) and ev.LHE_Njets.tolist() == [1] * 5
    assert ak.all(ev.LHEPart_incomingpz[ev.LHEPart_status == -1] != 0)
    assert np.allclose(ev.genWeight, ev.LHEWeight_originalXWGTUP)
    assert np.allclose(ak.to_numpy(ev.LHEScaleWeight), [[1.0, 0.9, 1.1]] * 5, rtol=1e-5)
    assert np.allclose(ak.to_numpy(ev.LHEPdfWeight), [[1.0, 1.02]] * 5, rtol=1e-5)
    # the shower keeps the LHE muons: two prompt GenPart muons per event
    prompt_muons = (abs(ev.GenPart_pdgId) == 13) & (ev.GenPart_status == 1) & ((ev.GenPart_statusFlags & 1) == 1)
    assert ak.all(ak.sum(prompt_muons, axis=1) >= 2)
    # reproducible: the same seed gives the same file
    again = tmp_path / "again.parquet"
    assert run("gen", lhe, "-o", again, "--seed", 3, "--events", 5)[0] == 0
    assert ak.array_equal(ak.from_parquet(again).GenPart_pt, ev.GenPart_pt)


def test_lhe_weights_to_root(tmp_path: Path) -> None:
    lhe = write_lhe(tmp_path / "zg.lhe", lhe_text(2))
    source = GenSource(lhe)
    from flashsim.io import write_events

    write_events(ak.concatenate(list(source.chunks())), tmp_path / "gen.root")
    assert "LHEScaleWeight" in uproot.open(tmp_path / "gen.root")["Events"].keys()


MLM_CARD = " 5 = maxjetflavor ! matched flavours\n"


def test_mlm_matching_vetoes_events_and_keeps_genweight_honest(tmp_path: Path) -> None:
    """ickkw = 1: Pythia's MLM matching runs (nJetMax from the file, qCut 1.5 x xqcut by default); vetoed events are
    counted and not written; the same events without matching in the header are all written."""
    lhe = write_lhe(tmp_path / "mlm.lhe", lhe_text(16, ickkw=1, xqcut=10.0, jets=(0, 1), card=MLM_CARD))
    out = tmp_path / "gen.parquet"
    code, output = run("gen", lhe, "-o", out, "--qcut", 50, "--pileup", 0)
    assert code == 0, output
    assert "MLM jet matching: qCut = 50 GeV, nJetMax = 1, nQmatch = 5" in output
    vetoed = int(output.split("LHE events not written: ")[1].split(" vetoed")[0])
    ev = ak.from_parquet(out)
    assert 0 < vetoed < 16 and len(ev) + vetoed == 16 and "dropped" not in output
    weights = [float(line.split()[2]) for line in re.findall(r"<event>\n([^\n]*)", lhe.read_text())]
    assert np.allclose(ev.genWeight, [weights[k - 1] for k in ev.event.tolist()])  # the kept events' own weights
    assert set(ev.LHE_Njets.tolist()) == {0, 1}

    default = GenSource(lhe, pileup=0)
    assert default.matching is not None and default.matching.q_cut == pytest.approx(15.0) and default.matching.n_jet_max == 1
    assert GenSource(lhe, n_jet_max=3).matching.n_jet_max == 3  # type: ignore[union-attr]
    zero_jets = write_lhe(tmp_path / "z0.lhe", lhe_text(4, ickkw=1, xqcut=10.0, jets=(0,), card=MLM_CARD))
    assert GenSource(zero_jets).matching.n_jet_max == 0  # type: ignore[union-attr]

    plain = write_lhe(tmp_path / "plain.lhe", lhe_text(16, jets=(0, 1), card=MLM_CARD))
    source = GenSource(plain, pileup=0)
    assert source.matching is None and len(ak.concatenate(list(source.chunks()))) == 16
    assert source.vetoed == source.dropped == 0


def test_fxfx_matching_is_recognised(tmp_path: Path) -> None:
    lhe = write_lhe(tmp_path / "fxfx.lhe", lhe_text(8, ickkw=3, jets=(0, 1), card=MLM_CARD + " 10.0 = ptj\n", nlo=True))
    code, output = run("gen", lhe, "-o", tmp_path / "gen.root")
    assert_error(code, output, str(lhe), "FxFx", "--qcut", "ptj = 10")
    source = GenSource(lhe, pileup=0, q_cut=30.0)
    assert source.matching is not None
    assert (source.matching.scheme, source.matching.q_cut_me, source.matching.n_jet_max) == ("FxFx", 10.0, 1)
    assert ("FxFx matching", "JetMatching:doFxFx = on") in source.matching.settings()
    ev = ak.concatenate(list(source.chunks()))
    assert len(ev) + source.vetoed + source.dropped == 8


BAD_MATCHING = {
    # name: (run-card arguments, extra options, words the error must hold)
    "xqcut without ickkw": (dict(ickkw=0, xqcut=20.0), [], ["inconsistent run card", "xqcut = 20", "ickkw = 0"]),
    "MLM without xqcut": (dict(ickkw=1, xqcut=0.0, card=MLM_CARD), [], ["inconsistent run card", "MLM needs xqcut > 0"]),
    "MLM without maxjetflavor": (dict(ickkw=1, xqcut=10.0), [], ["maxjetflavor"]),
    "FxFx with xqcut": (dict(ickkw=3, xqcut=10.0, card=MLM_CARD + " 10 = ptj\n"), ["--qcut", 30], ["inconsistent run card", "ickkw = 3"]),
    "qCut below xqcut": (dict(ickkw=1, xqcut=10.0, card=MLM_CARD), ["--qcut", 8], ["qCut = 8 GeV must be above", "xqcut = 10"]),
    "CKKW": (dict(ickkw=2, xqcut=10.0, card=MLM_CARD), [], ["ickkw = 2", "1: MLM, 3: FxFx"]),
    "qcut without matching": (dict(), ["--qcut", 20], ["--qcut/--njetmax given", "ickkw = 0"]),
}


@pytest.mark.parametrize("case", sorted(BAD_MATCHING))
def test_inconsistent_matching_header_is_one_error_line(tmp_path: Path, case: str) -> None:
    card, options, words = BAD_MATCHING[case]
    lhe = write_lhe(tmp_path / "bad.lhe", lhe_text(2, **card))  # type: ignore[arg-type]
    out = tmp_path / "gen.root"
    assert_error(*run("gen", lhe, "-o", out, *options), str(lhe), *words)
    assert_nothing_written(tmp_path, out)


# ------------------------------------------------------------------------------------------ Pythia8 cards ---

def test_card_makes_any_process_reproducibly(tmp_path: Path) -> None:
    card = tmp_path / "zz.cmnd"
    card.write_text("! ZZ -> 4 mu\nWeakDoubleBoson:ffbar2gmZgmZ = on\nWeakZ0:gmZmode = 2\n23:onMode = off\n23:onIfAny = 13\n")
    out = tmp_path / "zz.root"
    code, output = run("gen", card, "-o", out, "--events", 12, "--seed", 5)
    assert code == 0, output
    ev = uproot.open(out)["Events"].arrays()
    assert len(ev) == 12 and ev.event.tolist() == list(range(1, 13))
    assert ak.all(ak.sum(ev.GenPart_pdgId == 23, axis=1) >= 2)
    assert ak.all(ak.sum((abs(ev.GenPart_pdgId) == 13) & (ev.GenPart_status == 1) & ((ev.GenPart_statusFlags & 1) == 1), axis=1) >= 4)
    again = ak.concatenate(list(GenSource(card, events=12, seed=5).chunks()))
    assert ak.array_equal(again.GenPart.pt, ev.GenPart_pt)
    other = ak.concatenate(list(GenSource(card, events=12, seed=6).chunks()))
    assert not ak.array_equal(other.GenPart.pt, ev.GenPart_pt)


@pytest.mark.parametrize("card", sorted(p.name for p in CARDS.glob("*.cmnd")))
def test_shipped_cards_run(card: str) -> None:
    ev = ak.concatenate(list(GenSource(CARDS / card, events=3, pileup=0).chunks()))
    assert len(ev) == 3 and ak.all(ak.num(ev.GenJet) > 0)


def test_shipped_cards_exist() -> None:
    assert {"qcd_pthat300to470.cmnd", "zprime_bb.cmnd", "zz_4l.cmnd"} <= {p.name for p in CARDS.glob("*.cmnd")}


# --------------------------------------------------------------------------------------------- simulate ---

def test_one_command_from_lhe_to_coffea(tmp_path: Path) -> None:
    """simulate: an LHE file -> shower -> GEN -> the default chain -> a file coffea reads with matched_gen, its
    genWeight summing to the LHE file's event weights."""
    import re
    import warnings

    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    text = lhe_text(8, seed=4)
    lhe = write_lhe(tmp_path / "zg.lhe.gz", text)
    out = tmp_path / "flash.root"
    code, output = run("simulate", lhe, "-o", out, "--seed", 2)
    assert code == 0, output
    tree = uproot.open(out)["Events"]
    v15 = tmp_path / "flash_v15.root"
    assert run("simulate", lhe, "-o", v15, "--seed", 2, "--chain", ",".join(RUN3_CHAIN), "--nano-version", "v15")[0] == 0
    run3 = uproot.open(v15)["Events"].typenames()
    assert run3["LHEScaleWeight"] == "float[]" and run3["GenPart_statusFlags"] == "uint16_t[]" and "PFMET_pt" in run3
    lhe_weights = [float(line.split()[2]) for line in re.findall(r"<event>\n([^\n]*)", text)]
    assert len(lhe_weights) == tree.num_entries == 8  # no shower failed: every LHE event is in the output
    assert float(np.sum(tree["genWeight"].array(library="np"))) == pytest.approx(sum(lhe_weights), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = NanoEventsFactory.from_root({str(out): "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
        matched = nano.Jet.matched_gen
        muons = nano.Muon.matched_gen
    jets = tree.arrays(["Jet_genJetIdx", "Muon_genPartIdx"])
    assert ak.sum(~ak.is_none(matched.pt, axis=1)) == ak.sum(jets.Jet_genJetIdx >= 0) > 0
    assert ak.sum(~ak.is_none(muons.pt, axis=1)) == ak.sum(jets.Muon_genPartIdx >= 0) > 0


def test_simulate_writes_flash_collections(hepmc_file: Path, tmp_path: Path) -> None:
    """The zoo's default chain (muon, jet, fakejet, met) on three hand-made HepMC events."""
    out = tmp_path / "flash.root"
    code, output = run("simulate", hepmc_file, "-o", out)
    assert code == 0, output
    keys = set(uproot.open(out)["Events"].keys())
    assert {"Jet_pt", "Muon_pt", "MET_pt", "nGenPart", "GenJet_pt", "event"} <= keys
    lean = tmp_path / "lean.root"
    assert run("simulate", hepmc_file, "-o", lean, "--chain", "muon,jet", "--no-keep-gen")[0] == 0
    lean_keys = set(uproot.open(lean)["Events"].keys())
    assert "Muon_pt" in lean_keys and "MET_pt" not in lean_keys and not any(k.startswith("GenPart") for k in lean_keys)


# ------------------------------------------------------------------------------------------- bad files ---

def _hepmc_text(tmp_path: Path, n: int = 3) -> str:
    return write_hepmc(tmp_path / "good.hepmc3", [dimuon_event(7 + k) for k in range(n)]).read_text()


def _nan_event(tmp_path: Path) -> str:
    events = [dimuon_event(7), dimuon_event(8)]
    muon = [p for p in events[1].particles if p.pid == 13][0]
    muon.momentum = pyhepmc.FourVector(float("nan"), 1.0, 1.0, 10.0)
    return write_hepmc(tmp_path / "nan_src.hepmc3", events).read_text()


def _cut_event(text: str, k: int) -> str:
    """The text cut in the middle of its k-th event (1-based)."""
    start = [i for i, line in enumerate(text.splitlines(keepends=True)) if line.startswith("E ")][k - 1]
    lines = text.splitlines(keepends=True)
    return "".join(lines[: start + 4])


BAD_FILES = {
    # name: (file name, text made from tmp_path, words the error must hold)
    "hepmc truncated in an event": ("cut.hepmc3", lambda t: _cut_event(_hepmc_text(t), 3), ["event 3", "truncated"]),
    "hepmc truncated between events": ("cut.hepmc3", lambda t: _hepmc_text(t).replace("HepMC::Asciiv3-END_EVENT_LISTING\n", ""),
                                       ["truncated after event 3"]),
    "not hepmc": ("notes.hepmc3", lambda _: "these are my notes\n", ["not a HepMC3 ASCII file"]),
    "hepmc without events": ("empty.hepmc3", lambda _: "HepMC::Version 3.02.05\nHepMC::Asciiv3-START_EVENT_LISTING\n"
                             "HepMC::Asciiv3-END_EVENT_LISTING\n", ["holds no events"]),
    "hepmc nan momentum": ("nan.hepmc3", _nan_event, ["event 8", "non-finite momentum", "pdgId 13"]),
    "lhe truncated": ("cut.lhe", lambda _: lhe_text(4)[: lhe_text(4).index("<event>", len(lhe_text(4)) // 2) + 60],
                      ["truncated or malformed LHE"]),
    "lhe without init": ("noinit.lhe", lambda _: re_sub_init(lhe_text(2)), ["no <init> block"]),
    "lhe short event": ("short.lhe", lambda _: lhe_text(2).replace("6 1 ", "7 1 ", 1), ["event 1", "NUP = 7"]),
    "lhe bad weight": ("weight.lhe", lambda _: lhe_text(2).replace("<wgt id='1002'>", "<wgt id='1002'> nan", 1),
                       ["event 1", "id='1002'", "nan"]),
    "lhe not lhe": ("html.lhe", lambda _: "<html><body>hello</body></html>\n", ["not an LHE file"]),
    "empty card": ("empty.cmnd", lambda _: "! nothing but a comment\n\n", ["holds no Pythia settings"]),
    "unknown setting": ("typo.cmnd", lambda _: "HardQCD:all = on\nHardQCD:alll = on\n", ["typo.cmnd:2", "HardQCD:alll"]),
    "bad value": ("value.cmnd", lambda _: "HardQCD:all = on\nPhaseSpace:pTHatMin = fast\n", ["value.cmnd:2", "pTHatMin"]),
    "card without a process": ("noprocess.cmnd", lambda _: "Beams:eCM = 13000.\n", ["initialisation failed"]),
    "unknown suffix": ("events.txt", lambda _: "E 1\n", ["unknown generator input", ".cmnd"]),
}


def re_sub_init(text: str) -> str:
    start, stop = text.index("<init>"), text.index("</init>") + len("</init>")
    return text[:start] + text[stop:]


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_generator_file_is_one_error_line_and_no_output(case: str, tmp_path: Path) -> None:
    name, make, words = BAD_FILES[case]
    bad = tmp_path / "in" / name
    bad.parent.mkdir()
    bad.write_text(make(tmp_path))
    out = tmp_path / "gen.root"
    code, output = run("gen", bad, "-o", out)
    assert_error(code, output, str(bad), *words)
    assert_nothing_written(tmp_path, out)
    with pytest.raises(InputError):
        list(GenSource(bad).chunks())


def test_gzip_truncated_hepmc_and_lhe(tmp_path: Path) -> None:
    for name, text in (("cut.hepmc3.gz", _hepmc_text(tmp_path)), ("cut.lhe.gz", lhe_text(3))):
        data = gzip.compress(text.encode())
        bad = tmp_path / name
        bad.write_bytes(data[: len(data) // 2])
        out = tmp_path / "gen.root"
        assert_error(*run("gen", bad, "-o", out), str(bad), "truncated")
        assert_nothing_written(tmp_path, out)


def test_missing_input_and_input_as_output(tmp_path: Path, hepmc_file: Path) -> None:
    assert_error(*run("gen", tmp_path / "nope.hepmc3", "-o", tmp_path / "gen.root"), "nope.hepmc3", "no such file")
    with pytest.raises(InputError, match="unknown generator input"):
        input_kind("gen.root")
    copy = tmp_path / "x.hepmc3"
    copy.write_bytes(hepmc_file.read_bytes())
    assert_error(*run("gen", copy, "-o", copy, "--format", "root"), str(copy), "also the input")
    assert copy.read_bytes() == hepmc_file.read_bytes()


# ------------------------------------------------------------------------------- processes and event ids ---

@pytest.mark.parametrize("kind", ["card", "lhe", "hepmc"])
def test_output_does_not_depend_on_the_number_of_processes(kind: str, tmp_path: Path, hepmc_file: Path) -> None:
    """Blocks are seeded by (seed, block): one process or two (each skipping the other's blocks) give the same events."""
    if kind == "card":
        path, options = CARDS / "zz_4l.cmnd", dict(events=9, batch_size=4)
    elif kind == "lhe":  # with MLM matching: vetoes must fall on the same events
        path = write_lhe(tmp_path / "mlm.lhe", lhe_text(12, ickkw=1, xqcut=10.0, jets=(0, 1), card=MLM_CARD))
        options = dict(batch_size=4)
    else:
        path, options = hepmc_file, dict(batch_size=1)
    one, two = (GenSource(path, seed=4, **options) for _ in range(2))  # type: ignore[arg-type]
    single, double = ak.concatenate(list(one.chunks(jobs=1))), ak.concatenate(list(two.chunks(jobs=2)))
    assert len(one.blocks()) == 3
    assert ak.array_equal(single, double)
    assert (one.vetoed, one.dropped) == (two.vetoed, two.dropped)
    assert len(single) + one.vetoed + one.dropped == one.total


def test_default_luminosity_block_keeps_files_and_seeds_apart(tmp_path: Path) -> None:
    """Two generator files (or seeds) must not share (run, luminosityBlock, event), the key of the flash random numbers."""
    from flashsim.generators import default_lumi

    a, b = (write_lhe(tmp_path / f"{name}.lhe", lhe_text(2, seed=k)) for k, name in enumerate("ab"))
    lumis = {GenSource(a, seed=1).lumi, GenSource(b, seed=1).lumi, GenSource(a, seed=2).lumi}
    assert len(lumis) == 3 and all(1 <= lumi < 2**31 for lumi in lumis)
    assert GenSource(a, seed=1).lumi == default_lumi(a, 1) and GenSource(a, seed=1, lumi=7).lumi == 7
    out = tmp_path / "a.root"
    code, output = run("gen", a, "-o", out, "--pileup", 0)
    assert code == 0, output
    assert f"luminosityBlock {default_lumi(a, 1)}" in output
    assert set(uproot.open(out)["Events"]["luminosityBlock"].array().tolist()) == {default_lumi(a, 1)}


# ------------------------------------------------------------------------------- --reco: paired GEN+RECO ---

RECO_BRANCHES = {"nJet", "Jet_pt", "Jet_genJetIdx", "nMuon", "Muon_pt", "Muon_genPartIdx", "nElectron", "Electron_pt",
                 "Photon_pt", "MET_pt", "PV_npvs", "fixedGridRhoFastjetAll"}


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A detector card with a small min-bias pool, and the cache the pools go to."""
    tmp = tmp_path_factory.mktemp("detector")
    card = tmp / "det.toml"
    card.write_text("[detector]\npu_pool_size = 30\n")
    return card, tmp / "cache"


def test_refsim_pileup_pool_option_equals_the_card(detector: tuple[Path, Path], tmp_path: Path) -> None:
    """`refsim --pileup-pool N` makes the sample that a detector card with pu_pool_size = N makes (same pool, same events)."""
    card, cache = detector
    by_card, by_option = tmp_path / "card.root", tmp_path / "option.root"
    common = ("--process", "dy", "-n", 5, "--pileup", 10, "--seed", 3, "--cache-dir", cache)
    assert run("refsim", *common, "-o", by_card, "--params", card)[0] == 0
    code, output = run("refsim", *common, "-o", by_option, "--pileup-pool", 30)
    assert code == 0, output
    card_tree, option_tree = (uproot.open(path)["Events"] for path in (by_card, by_option))
    assert ak.array_equal(card_tree.arrays(["Jet_pt", "Muon_pt", "MET_pt"]), option_tree.arrays(["Jet_pt", "Muon_pt", "MET_pt"]))


def test_card_gen_reco_writes_refsims_branches_and_trains_a_unit(detector: tuple[Path, Path], tmp_path: Path) -> None:
    """A card -> gen --reco: GEN exactly as gen alone makes it, RECO with refsim's branches (both versions), and a
    file `flashsim dataset jet` makes training rows from."""
    card, cache = detector
    out, plain, ref = tmp_path / "zz.root", tmp_path / "gen.root", tmp_path / "ref.root"
    options = ("--events", 12, "--seed", 5, "--pileup", 10, "--jobs", 1)
    code, output = run("gen", CARDS / "zz_4l.cmnd", "-o", out, *options, "--reco", "--params", card, "--cache-dir", cache)
    assert code == 0, output
    assert run("gen", CARDS / "zz_4l.cmnd", "-o", plain, *options)[0] == 0
    code, output = run("refsim", "--process", "dy", "-n", 5, "--pileup", 10, "-o", ref, "--params", card,
                       "--cache-dir", cache)
    assert code == 0, output
    tree, gen_tree, ref_tree = (uproot.open(path)["Events"] for path in (out, plain, ref))
    assert GEN_BRANCHES | RECO_BRANCHES <= set(tree.keys()) and set(tree.keys()) == set(ref_tree.keys())
    assert tree.typenames() == ref_tree.typenames()
    assert ak.array_equal(tree.arrays(gen_tree.keys()), gen_tree.arrays())  # the detector draws after the GEN
    reco = tree.arrays(["nJet", "nMuon", "Muon_genPartIdx"])
    assert ak.sum(reco.nJet) > 0 and ak.sum(reco.Muon_genPartIdx >= 0) >= 12  # ZZ -> 4 mu: most muons found
    v15, ref15 = tmp_path / "zz15.root", tmp_path / "ref15.root"
    assert run("gen", CARDS / "zz_4l.cmnd", "-o", v15, *options, "--reco", "--params", card, "--cache-dir", cache,
               "--nano-version", "v15")[0] == 0
    assert run("refsim", "--process", "dy", "-n", 5, "--pileup", 10, "-o", ref15, "--params", card, "--cache-dir", cache,
               "--nano-version", "v15")[0] == 0
    assert uproot.open(v15)["Events"].typenames() == uproot.open(ref15)["Events"].typenames()
    assert "Jet_btagPNetB" in uproot.open(v15)["Events"].keys()
    table = tmp_path / "jets.parquet"
    code, output = run("dataset", "jet", "--input", out, "--output", table)
    assert code == 0, output
    assert len(ak.from_parquet(table)) > 0


def test_lhe_and_hepmc_gen_reco(detector: tuple[Path, Path], hepmc_file: Path, tmp_path: Path) -> None:
    """LHE (showered) and HepMC3 input through the detector: the hand-made HepMC dimuons come out as two muons."""
    card, cache = detector
    params = DetectorParams.from_toml(card)
    lhe = write_lhe(tmp_path / "zg.lhe", lhe_text(4, seed=3))
    for path in (lhe, hepmc_file):
        events = ak.concatenate(list(GenSource(path, pileup=5, params=params, reco=True, cache_dir=cache).chunks()))
        assert {"GenPart", "GenJet", "Jet", "Muon", "Electron", "Photon", "MET", "PV_npvs"} <= set(events.fields), path
    assert ak.all(events.Muon.genPartIdx[ak.argsort(events.Muon.pt, ascending=False)][:, :2] >= 0)
    out = tmp_path / "lhe.root"
    code, output = run("gen", lhe, "-o", out, "--reco", "--params", card, "--cache-dir", cache, "--pileup", 5)
    assert code == 0, output
    assert {"LHEPart_pt", "Jet_pt", "MET_pt"} <= set(uproot.open(out)["Events"].keys())


@pytest.mark.parametrize("kind", ["card", "hepmc"])
def test_gen_reco_does_not_depend_on_the_number_of_processes(kind: str, detector: tuple[Path, Path],
                                                             hepmc_file: Path) -> None:
    """The detector's stream is the block's: one process or two give the same RECO; another seed another RECO."""
    card, cache = detector
    path, options = (CARDS / "zz_4l.cmnd", dict(events=9, batch_size=4)) if kind == "card" else (hepmc_file, dict(batch_size=1))

    def make(seed: int, jobs: int) -> ak.Array:
        source = GenSource(path, seed=seed, pileup=20, params=DetectorParams.from_toml(card), reco=True,
                           cache_dir=cache, **options)  # type: ignore[arg-type]
        return ak.concatenate(list(source.chunks(jobs=jobs)))

    single = make(4, 1)
    assert ak.array_equal(single, make(4, 2))
    assert not ak.array_equal(single.Jet.pt, make(5, 1).Jet.pt)


def test_gen_reco_bad_combinations_are_one_error_line(detector: tuple[Path, Path], hepmc_file: Path,
                                                      tmp_path: Path) -> None:
    card, cache = detector
    out = tmp_path / "gen.root"
    assert_error(*run("gen", hepmc_file, "-o", out, "--params", card), "--params", str(card), "--reco")
    assert_error(*run("gen", hepmc_file, "-o", out, "--cache-dir", cache), "--cache-dir", "--reco")
    bad = tmp_path / "bad.toml"
    bad.write_text("pu_pool_sise = 3\n")
    assert_error(*run("gen", hepmc_file, "-o", out, "--reco", "--params", bad), str(bad), "pu_pool_sise")
    assert_nothing_written(tmp_path, out)
