"""Fidelity of the zoo units on held-out refsim events (issues #7 and #8), and generation speed.

    python benchmarks/bench_units.py --input data/refsim/test_wjets.root data/refsim/test_ttbar.root \
        --chain muon,jet,fakejet,met --ablation met_genonly --out bench_report/

Runs the chain on the GEN part of the held-out files, compares with their own refsim RECO
(same GEN events: the paired noise-floor ratio of DESIGN.md), and prints:
every target's noise-floor ratio, the median, the classifier AUC beside the reference-halves
AUC, jet response/resolution per gen-pT bin, b-tag ROC AUC per flavour, muon, electron and photon
efficiency vs pT/eta (flash averaged over --efficiency-oversample generations; electrons and photons
are compared with the reference objects the chain's units stand for, the others counted by genPartFlav), jet multiplicity per pileup
bin (chi2/ndf), the leading fake-jet pair, MET resolution vs sumEt, the MET-vs-jet-mismeasurement
correlation (with a GEN-only MET ablation), the electrons and photons in a jet and Jet_nElectrons, photons per event by
source and their electronIdx, the e/gamma objects with no gen partner by the jet they lie in (issue 24; e/gamma chain: ``--chain jet,fakejet,electron,electron_fromjet,photon,photon_fromjet``,
with ``photon_fromelectron`` the third photon source), and the chain's events/s next to the refsim detector
stage's. ``--seeds 11,12,13`` repeats everything per generation seed and ends with a table of the
headline figures per seed, their mean and spread. ``--precision bfloat16`` runs the flows' conditioner networks in
bfloat16 (flashsim generate --precision).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import awkward as ak
import numpy as np
import torch

from flashsim.chain import EVENT_ID_COLUMNS, GEN_PREFIXES, Chain
from flashsim.events import pointed
from flashsim.io import read_events
from flashsim.models import PRECISIONS
from flashsim.validate import gen_efficiency_objects, validate
from flashsim.validate.metrics import classifier_two_sample_test, efficiency_profile, event_splits, noise_floor_ratio, response_profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_chain import detector_stage_rate  # noqa: E402

from flashsim.locations import DEFAULT_CHAIN
from flashsim.unit import Unit

MIN_COUNT = 200  # bins with fewer matched objects are not judged
# refsim's electrons and photons also come from conversions, hadrons and jets, which other units draw: the chain's
# output is compared with the reference objects its units stand for (see covered_reference)
PARTIAL = ("Electron", "Photon")


def _rows(title: str, header: str) -> None:
    print(f"\n== {title}\n{header}")


def print_collection(name: str, metrics: dict) -> dict[str, float]:
    c = metrics["collections"][name]
    _rows(f"{name}: noise-floor ratio per target (paired, {metrics['config']['n_splits']} splits)", f"{'variable':18s} {'R':>7s}")
    for var, v in c["variables"].items():
        flag = "" if v["ratio"] is None or v["ratio"] <= 2 else "  > 2"
        print(f"{var:18s} {v['ratio'] if v['ratio'] is not None else float('nan'):7.2f}{flag}")
    print(f"median R {c['median_ratio']:.2f} (bar 1.3), max R {c['max_ratio'] if c['max_ratio'] is not None else float('nan'):.2f} "
          f"({c['worst_variable']}) (bar 2)")
    cl = c.get("classifier")
    if cl:
        print(f"classifier two-sample AUC {cl['auc']:.3f} (bar 0.60); reference halves {cl['auc_ref_halves']:.3f}")
    return {f"{name} median R": c["median_ratio"], f"{name} max R": c["max_ratio"], f"{name} AUC": cl["auc"] if cl else None}


def ratio_diff(f: float, ef: float, r: float, er: float) -> tuple[float, float]:
    """100 (f / r - 1) and its error from the independent errors of f and r."""
    return 100 * (f / r - 1), 100 * (f / r) * float(np.hypot(ef / f, er / r))


def excess(diff: float, err: float, bar: float) -> float:
    """How many sigma |diff| lies beyond the bar (negative: within it)."""
    return (abs(diff) - bar) / err if err > 0 else float("inf")


def print_response(name: str, c: dict) -> dict[str, float]:
    """Response and resolution per gen-pT bin; errors are bootstrap ones (validate.response_profile)."""
    prof = c["response"]["vs_pt"]
    f, r = prof["flash"], prof["reference"]
    edges = f["edges"]
    _rows(f"{name}: response (median reco/gen) and resolution vs gen pT, diff % +- its bootstrap error",
          f"{'gen pT':>13s} {'n ref':>6s} {'resp ref':>9s} {'flash':>7s} {'diff %':>12s} {'res ref':>8s} {'flash':>7s} {'diff %':>12s}")
    worst = {"response": (0.0, -np.inf), "resolution": (0.0, -np.inf)}  # (worst |diff|, worst excess over the bar)
    bars = {"response": 3.0, "resolution": 10.0}
    for i in range(len(edges) - 1):
        n = r["count"][i]
        if not n or not np.isfinite(r["median"][i]) or not np.isfinite(f["median"][i]):
            continue
        d = {"response": ratio_diff(f["median"][i], f["median_err"][i], r["median"][i], r["median_err"][i]),
             "resolution": ratio_diff(f["resolution"][i], f["resolution_err"][i], r["resolution"][i], r["resolution_err"][i])}
        judged = n >= MIN_COUNT
        if judged:
            for k, (diff, err) in d.items():
                worst[k] = (max(worst[k][0], abs(diff)), max(worst[k][1], excess(diff, err, bars[k])))
        (dm, em), (ds, es) = d["response"], d["resolution"]
        print(f"{edges[i]:6.0f}-{edges[i + 1]:<6.0f} {n:6d} {r['median'][i]:9.3f} {f['median'][i]:7.3f} {dm:6.1f}+-{em:4.1f} "
              f"{r['resolution'][i]:8.3f} {f['resolution'][i]:7.3f} {ds:6.1f}+-{es:4.1f}{'' if judged else '  (few)'}")
    for k, (w, x) in worst.items():
        print(f"{k}: worst |diff| in bins with >= {MIN_COUNT} objects {w:.1f} % (bar {bars[k]:.0f}); "
              f"largest excess over the bar {x:+.1f} sigma")
    return {f"{name} response %": worst["response"][0], f"{name} resolution %": worst["resolution"][0],
            f"{name} res excess sig": worst["resolution"][1]}


def print_roc(c: dict) -> dict[str, float]:
    worst = 0.0
    _rows("Jet: tagger ROC AUC per flavour pair", f"{'score':16s} {'pair':12s} {'ref':>6s} {'flash':>6s} {'delta':>7s}")
    for score, pairs in c.get("roc", {}).items():
        for pair, v in pairs.items():
            if isinstance(v, dict) and "auc_flash" in v:
                print(f"{score:16s} {pair:12s} {v['auc_reference']:6.3f} {v['auc_flash']:6.3f} {v['delta_auc']:7.3f}")
                if score == "btagDeepFlavB":
                    worst = max(worst, abs(v["delta_auc"]))
    return {"btagB ROC dAUC": worst}


def source_efficiency_objects(unit: Unit, events: ak.Array, gen: ak.Array) -> dict[str, np.ndarray]:
    """pt, eta and a reconstructed flag (an object of the unit's output points to it through gen_index) of the unit's
    selected source objects in ``gen``: the efficiency of a source of another kind (photons of gen electrons)."""
    rows = unit.rows(gen)
    assert rows is not None and unit.spec.gen_index is not None
    index = events[unit.spec.output][unit.spec.gen_index]
    matched = ak.any(rows["_index"][:, :, None] == index[:, None, :], axis=2)
    return {"pt": ak.to_numpy(ak.flatten(rows.pt)), "eta": ak.to_numpy(ak.flatten(rows.eta)), "matched": ak.to_numpy(ak.flatten(matched))}


def efficiency_study(chain: Chain, gen: ak.Array, ref: ak.Array, collection: str, seed: int, oversample: int,
                     unit: Unit | None = None) -> dict[str, float]:
    """Efficiency vs gen pT and eta of reference and flash. The chain up to the unit that writes
    ``collection`` runs ``oversample`` times on the same GEN events (seeds ``seed * 1000 + k``) and
    the flash efficiency is their mean, so its sampling error is that of the reference over
    sqrt(oversample): sigma of the difference is sqrt(p (1 - p) / n (1 + 1 / oversample)).
    With ``unit``: the efficiency of that unit's source objects (source_efficiency_objects), the chain up to it."""
    last = next(i for i, u in enumerate(chain.units) if (u is unit if unit is not None else u.spec.output == collection))
    upstream = Chain(chain.units[: last + 1], precision=chain.precision)
    if unit is None:
        r = gen_efficiency_objects(ref, collection)
        runs = [gen_efficiency_objects(upstream.run(gen, seed=seed * 1000 + k), collection, ref) for k in range(oversample)]
    else:
        r = source_efficiency_objects(unit, ref, ref)
        runs = [source_efficiency_objects(unit, upstream.run(gen, seed=seed * 1000 + k), ref) for k in range(oversample)]
        collection = f"{collection} of {unit.spec.source.collection} ({unit.name})"
    headline = {}
    # pt bins from half the 1 % quantile of the reconstructed (below: the many soft gen objects nothing reconstructs)
    pt_edges = np.geomspace(0.5 * np.quantile(r["pt"][r["matched"]], 0.01), np.quantile(r["pt"], 0.99), 13)
    for axis, edges in (("pt", pt_edges), ("eta", np.linspace(-2.8, 2.8, 15))):
        _rows(f"{collection}: efficiency vs {axis}, flash averaged over {oversample} generations",
              f"{'bin':>13s} {'n gen':>6s} {'ref':>6s} {'flash':>6s} {'diff':>6s} {'sigma':>6s}")
        pr = efficiency_profile(r[axis], r["matched"], edges)
        pf = [efficiency_profile(f[axis], f["matched"], edges)["efficiency"] for f in runs]
        flash = np.mean(pf, axis=0)
        worst, worst_pull = 0.0, 0.0
        for i in range(len(edges) - 1):
            n = int(pr["total"][i])
            if not n:
                continue
            diff = flash[i] - pr["efficiency"][i]
            p = 0.5 * (flash[i] + pr["efficiency"][i])
            sigma = float(np.sqrt(p * (1 - p) / n * (1 + 1 / oversample)))
            if n >= MIN_COUNT:
                worst = max(worst, abs(diff))
                worst_pull = max(worst_pull, abs(diff) / sigma if sigma else 0.0)
            print(f"{edges[i]:6.2f}-{edges[i + 1]:<6.2f} {n:6d} {pr['efficiency'][i]:6.3f} {flash[i]:6.3f} {diff:6.3f} {sigma:6.3f}")
        print(f"worst |diff| in bins with >= {MIN_COUNT} gen objects: {worst:.3f} (bar 0.02); worst |diff|/sigma {worst_pull:.1f}")
        headline[f"{collection} eff vs {axis}"] = worst
        headline[f"{collection} eff vs {axis} sig"] = worst_pull
    return headline


def efficiency_studies(chain: Chain, gen: ak.Array, ref: ak.Array, collections: list[str], seed: int, oversample: int) -> dict[str, float]:
    """The efficiency of every muon, electron and photon collection, and of the source of each further GenPart-sourced
    unit writing an electron or photon collection (photon_fromelectron's gen electrons)."""
    headline = {}
    for name in ("Muon", *PARTIAL):
        if name in collections:
            headline |= efficiency_study(chain, gen, ref, name, seed, oversample)
    for unit in chain.units:
        first = next(u for u in chain.units if u.spec.output == unit.spec.output)
        if unit is not first and unit.spec.output in PARTIAL and unit.spec.gen_index and unit.spec.type == "object":
            headline |= efficiency_study(chain, gen, ref, unit.spec.output, seed, oversample, unit)
    return headline


def covered_reference(chain: Chain, ref: ak.Array, collection: str) -> ak.Array:
    """The reference objects of ``collection`` the chain's units stand for, as the validation report is to compare them:
    those pointing (``gen_index``) to a source object of a GenPart-sourced object unit keep their genPartIdx (the
    gen-matched comparison); where a from-jet (``match``) or pileup (multiplicity) unit writes the collection too, it
    stands for all the others, with genPartIdx -1 as those units write it (a conversion electron pointing to its GenPart
    photon in refsim is a from-jet unit's electron with no gen partner in a chain without electron_fromphoton). Prints
    how many that is."""
    objects = ref[collection]
    by_gen = ak.zeros_like(objects.pt, dtype=bool)
    rest = False
    for unit in chain.units:
        if unit.spec.output != collection:
            continue
        if unit.spec.type == "object" and unit.spec.gen_index:
            rows = unit.spec.kind.rows(unit, ref)
            by_gen = by_gen | ak.any(objects[unit.spec.gen_index][:, :, None] == rows["_index"][:, None, :], axis=2)
        else:
            rest = True
    covered = ak.ones_like(by_gen) if rest else by_gen
    n_gen, n, n_all = int(ak.sum(by_gen)), int(ak.sum(covered)), int(ak.sum(ak.num(objects)))
    flav, counts = np.unique(ak.to_numpy(ak.flatten(objects.genPartFlav[~covered])), return_counts=True)
    others = ", ".join(f"{int(f)}: {c} ({100 * c / n_all:.1f} %)" for f, c in zip(flav, counts))
    _rows(f"{collection}: reference objects the chain's units stand for", "")
    print(f"{n} of {n_all} ({100 * n / n_all:.1f} %), {n_gen} of them gen-matched as the GenPart-sourced units' objects; "
          f"the others by genPartFlav: {others or 'none'}")
    objects = ak.with_field(objects, ak.where(by_gen, objects.genPartIdx, -1), "genPartIdx")
    return objects[covered]


def jet_multiplicity_by_pileup(flash: ak.Array, ref: ak.Array, n_bins: int = 5) -> dict[str, float]:
    pu = ak.to_numpy(ref.Pileup.nTrueInt)
    edges = np.quantile(pu, np.linspace(0, 1, n_bins + 1))
    _rows("Jets per event (matched + fake) per pileup bin", f"{'nTrueInt':>13s} {'events':>7s} {'<n> ref':>8s} {'flash':>7s} {'chi2/ndf':>9s}")
    nf, nr = ak.to_numpy(ak.num(flash.Jet)), ak.to_numpy(ak.num(ref.Jet))
    worst = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (pu >= lo) & (pu <= hi)
        top = int(max(nf[sel].max(), nr[sel].max())) + 1
        hf, hr = np.bincount(nf[sel], minlength=top), np.bincount(nr[sel], minlength=top)
        used = (hf + hr) > 0
        chi2 = float(np.sum((hf[used] - hr[used]) ** 2 / (hf[used] + hr[used])))
        ndf = int(used.sum())
        worst = max(worst, chi2 / ndf)
        print(f"{lo:6.1f}-{hi:<6.1f} {int(sel.sum()):7d} {nr[sel].mean():8.2f} {nf[sel].mean():7.2f} {chi2 / ndf:9.2f}")
    print(f"worst chi2/ndf {worst:.2f} (bar 2)")
    return {"jets/event chi2/ndf": worst}


def jet_links_study(flash: ak.Array, ref: ak.Array) -> dict[str, float]:
    """Issue 24: the fraction of electrons and photons in a jet (``jetIdx >= 0``) by source (a genPartIdx or none), and
    the distribution of ``Jet_nElectrons`` with its paired noise-floor ratio, flash vs reference (none without Electron)."""
    if "nElectrons" not in flash.Jet.fields:
        return {}
    _rows("Electrons and photons in a jet (jetIdx >= 0), by source; error: binomial",
          f"{'objects':26s} {'n ref':>6s} {'ref':>13s} {'n flash':>7s} {'flash':>13s}")
    headline = {}
    for name in PARTIAL:
        if name not in flash.fields:
            continue
        for label, cut in (("all", None), ("genPartIdx >= 0", True), ("genPartIdx = -1", False)):
            cells = []
            for ev in (ref, flash):
                objects = ev[name] if cut is None else ev[name][(ev[name].genPartIdx >= 0) == cut]
                inside = ak.to_numpy(ak.flatten(objects.jetIdx >= 0))
                p = float(inside.mean()) if len(inside) else float("nan")
                cells.append((len(inside), p, float(np.sqrt(p * (1 - p) / len(inside))) if len(inside) else float("nan")))
            (nr, pr, er), (nf, pf, ef) = cells
            print(f"{name + ' ' + label:26s} {nr:6d} {pr:6.3f}+-{er:5.3f} {nf:7d} {pf:6.3f}+-{ef:5.3f}")
            headline[f"{name} {label} in jet ref"], headline[f"{name} {label} in jet flash"] = pr, pf
    counts = {k: ak.to_numpy(ak.flatten(ev.Jet.nElectrons)) for k, ev in (("ref", ref), ("flash", flash))}
    top = int(max(c.max(initial=0) for c in counts.values())) + 1
    _rows("Jet_nElectrons: jets per value", f"{'nElectrons':>10s} {'ref':>8s} {'flash':>8s}")
    hist = {k: np.bincount(c, minlength=top) for k, c in counts.items()}
    for value in range(top):
        print(f"{value:10d} {hist['ref'][value]:8d} {hist['flash'][value]:8d}")
    ratio = noise_floor_ratio(flash.Jet.nElectrons, ref.Jet.nElectrons).ratio
    print(f"jets {len(counts['ref'])} ref / {len(counts['flash'])} flash; electrons per jet {counts['ref'].mean():.4f} ref / "
          f"{counts['flash'].mean():.4f} flash; noise-floor ratio R {ratio:.2f} (bar 2)")
    return headline | {"Jet nElectrons R": ratio}


def partner_pdg(objects: ak.Array, ev: ak.Array) -> ak.Array:
    """|pdgId| of the GenPart each object's genPartIdx names (0: none)."""
    return abs(pointed(objects.genPartIdx, ev.GenPart.pdgId))


def photon_sources_study(flash: ak.Array, ref: ak.Array) -> dict[str, float]:
    """Issue 24: photons per event by source (where genPartIdx points: the `photon`, `photon_fromelectron` and
    `photon_fromjet` units' objects), the fraction of each naming an electron (electronIdx >= 0), and of electrons
    naming a photon (photonIdx >= 0), flash vs reference (none without Photon)."""
    if "Photon" not in flash.fields:
        return {}

    _rows("Photons by source (genPartIdx to a GenPart photon, electron or none): per event, and the fraction naming an "
          "electron (electronIdx >= 0); error: binomial", f"{'photons':22s} {'/event ref':>10s} {'flash':>7s} {'with electron ref':>18s} {'flash':>13s}")
    headline = {}
    kinds = {ev_name: partner_pdg(ev.Photon, ev) for ev_name, ev in (("ref", ref), ("flash", flash))}
    for label, code in (("all", None), ("-> GenPart photon", 22), ("-> GenPart electron", 11), ("genPartIdx -1", 0)):
        cells = []
        for name, ev in (("ref", ref), ("flash", flash)):
            photons = ev.Photon if code is None else ev.Photon[kinds[name] == code]
            linked = ak.to_numpy(ak.flatten(photons.electronIdx >= 0)) if "electronIdx" in photons.fields else np.zeros(0, bool)
            p = float(linked.mean()) if len(linked) else float("nan")
            cells.append((float(ak.mean(ak.num(photons))), p, float(np.sqrt(p * (1 - p) / len(linked))) if len(linked) else float("nan")))
        (nr, pr, er), (nf, pf, ef) = cells
        print(f"{label:22s} {nr:10.3f} {nf:7.3f} {pr:11.3f}+-{er:5.3f} {pf:6.3f}+-{ef:5.3f}")
        headline[f"Photon {label} /event ref"], headline[f"Photon {label} /event flash"] = nr, nf
    if "Electron" in flash.fields:
        with_photon = {k: ak.to_numpy(ak.flatten(ev.Electron.photonIdx >= 0)) if "photonIdx" in ev.Electron.fields else np.zeros(0, bool)
                       for k, ev in (("ref", ref), ("flash", flash))}
        print("electrons naming a photon (photonIdx >= 0): " + ", ".join(
            f"{k} {v.mean() if len(v) else float('nan'):.3f} of {len(v)}" for k, v in with_photon.items()))
    return headline


def jet_kind(objects: ak.Array, jets: ak.Array) -> ak.Array:
    """Where each object lies: 2 in a gen-matched jet (its ``jetIdx`` names a Jet with a genJetIdx), 1 in a jet with
    none (a pileup or unmatched jet), 0 in no jet."""
    index = objects.jetIdx
    inside = (index >= 0) & (index < ak.num(jets))
    matched = ak.fill_none(ak.pad_none(jets.genJetIdx, 1)[ak.where(inside, index, 0)], -1) >= 0
    return ak.where(inside, ak.where(matched, 2, 1), 0)


def unmatched_egamma_study(flash: ak.Array, ref: ak.Array, collections: Sequence[str]) -> dict[str, float]:
    """Issue 24: the electrons and photons the chain writes (of ``collections``), per event by what genPartIdx names (a
    GenPart electron, photon or none), and those with none by where they lie (a gen-matched jet, a jet with no GenJet,
    no jet), flash vs reference."""
    names = [c for c in ("Electron", "Photon") if c in collections and "jetIdx" in flash[c].fields]
    if not names or "Jet" not in flash.fields or "genJetIdx" not in flash.Jet.fields:
        return {}
    _rows("Electrons and photons per event by genPartIdx (to a GenPart electron, photon or none) and, with none, by the jet "
          "they lie in", f"{'objects':40s} {'ref':>8s} {'flash':>8s} {'flash/ref':>9s}")
    headline = {}
    for name in names:
        cells: dict[str, list[float]] = {}
        for ev in (ref, flash):
            objects = ev[name]
            index, pdg = objects.genPartIdx, partner_pdg(objects, ev)
            kind = jet_kind(objects, ev.Jet)
            n = len(ev)
            for label, cut in (("-> GenPart electron", pdg == 11), ("-> GenPart photon", pdg == 22),
                               ("genPartIdx -1", index < 0), ("  in a gen-matched jet", (index < 0) & (kind == 2)),
                               ("  in a jet with no GenJet", (index < 0) & (kind == 1)), ("  in no jet", (index < 0) & (kind == 0))):
                cells.setdefault(label, []).append(float(ak.sum(cut)) / n)
        for label, (r, f) in cells.items():
            print(f"{name + ' ' + label:40s} {r:8.4f} {f:8.4f} {f / r if r else float('nan'):9.3f}")
            headline[f"{name} {label.strip()} /event ref"], headline[f"{name} {label.strip()} /event flash"] = r, f
    return headline


ALL_OBJECTS = {"Muon": ("pt", "eta", "phi", "dxy", "dz", "ip3d", "sip3d", "pfRelIso04_all", "tightId"),
               "Jet": ("pt", "eta", "phi", "btagDeepFlavB"),
               "Electron": ("pt", "eta", "phi", "dxy", "dz", "sip3d", "sieie", "r9", "hoe", "pfRelIso03_all", "miniPFRelIso_all",
                            "cutBased", "mvaFall17V2Iso", "lostHits", "convVeto", "genPartFlav"),
               "Photon": ("pt", "eta", "phi", "sieie", "r9", "hoe", "pfRelIso03_all", "mvaID", "electronVeto", "genPartFlav")}


def print_ratios(title: str, flash: ak.Array, ref: ak.Array, names: Sequence[str]) -> dict[str, float]:
    """The paired noise-floor ratio of each variable of two jagged collections, printed one per row."""
    _rows(f"{title}: noise-floor ratio", f"{'variable':18s} {'R':>7s}")
    ratios = {var: noise_floor_ratio(flash[var], ref[var]).ratio for var in names}
    for var, r in ratios.items():
        print(f"{var:18s} {r:7.2f}{'  > 2' if r > 2 else ''}")
    return ratios


def all_objects_study(flash: ak.Array, ref: ak.Array, collection: str) -> dict[str, float]:
    """Every object of the collection, gen-matched or not (the validation report compares matched ones only): the paired
    noise-floor ratio per variable and the classifier AUC beside the reference halves' (the issue-26 "all" rows)."""
    names = [v for v in ALL_OBJECTS[collection] if v in flash[collection].fields and v in ref[collection].fields]
    ratios = print_ratios(f"{collection}, all objects (matched and unmatched)", flash[collection], ref[collection], names)
    values = {k: [np.column_stack([ak.to_numpy(ak.flatten(ev[collection][v])).astype(float) for v in names]),
                  np.repeat(np.arange(len(ev)), ak.to_numpy(ak.num(ev[collection])))] for k, ev in (("flash", flash), ("ref", ref))}
    split = event_splits(len(flash), len(ref), paired=True, n_splits=1, seed=0)[0]
    test = classifier_two_sample_test(*values["flash"], *values["ref"], split)
    n_f, n_r = len(values["flash"][1]), len(values["ref"][1])
    print(f"{collection} all: {n_f} flash / {n_r} reference objects; median R {np.median(list(ratios.values())):.2f}, "
          f"max R {max(ratios.values()):.2f}; classifier AUC {test['auc']:.3f} (reference halves {test['auc_ref_halves']:.3f})")
    return {f"{collection} all median R": float(np.median(list(ratios.values()))), f"{collection} all max R": max(ratios.values()),
            f"{collection} all AUC": test["auc"], f"{collection} all AUC floor": test["auc_ref_halves"]}


def leading_fake_pair(events: ak.Array) -> tuple[ak.Array, ak.Array]:
    fakes = events.Jet[events.Jet.genJetIdx < 0]
    two = ak.num(fakes) >= 2
    lead, sub = ak.firsts(fakes[:, :1]), ak.firsts(fakes[:, 1:2])
    dphi = np.abs((lead.phi - sub.phi + np.pi) % (2 * np.pi) - np.pi)
    dpt = lead.pt - sub.pt
    counts = ak.to_numpy(two).astype(np.int64)  # one entry for events with a pair, none otherwise
    as_list = lambda x: ak.unflatten(ak.to_numpy(ak.fill_none(x, 0))[counts == 1], counts)  # noqa: E731
    return as_list(dphi), as_list(dpt)


def fake_pair(flash: ak.Array, ref: ak.Array) -> dict[str, float]:
    _rows("Leading fake-jet pair (events with >= 2 fake jets)", f"{'quantity':10s} {'R':>6s}")
    headline = {}
    for label, fv, rv in zip(("dphi", "dpt"), leading_fake_pair(flash), leading_fake_pair(ref)):
        headline[f"fake pair {label} R"] = noise_floor_ratio(fv, rv).ratio
        print(f"{label:10s} {headline[f'fake pair {label} R']:6.2f}  (bar 2)")
    return headline


FAKE_JET_VARIABLES = ("pt", "eta", "phi", "mass", "area", "nConstituents", "neHEF", "btagDeepFlavB", "qgl")


def fake_jets_study(flash: ak.Array, ref: ak.Array) -> dict[str, float]:
    """The jets with no GenJet (genJetIdx -1: the fake-jet unit's, and refsim's pileup and displaced jets) alone: their
    number and the noise-floor ratio per variable (in the all-jet rows they are a third of the jets, mostly forward)."""
    fakes = {k: ev.Jet[ev.Jet.genJetIdx < 0] for k, ev in (("flash", flash), ("ref", ref))}
    n_f, n_r = (int(ak.sum(ak.num(j))) for j in fakes.values())
    ratios = print_ratios(f"Jets with genJetIdx -1 ({n_f} flash / {n_r} reference)", fakes["flash"], fakes["ref"], FAKE_JET_VARIABLES)
    median = float(np.median(list(ratios.values())))
    print(f"median R {median:.2f}, max R {max(ratios.values()):.2f}")
    return {"Jet fake median R": median, "Jet fake max R": max(ratios.values()),
            "Jet fake btagDeepFlavB R": ratios["btagDeepFlavB"], "Jet fake eta R": ratios["eta"], "Jet fake flash/ref": n_f / n_r}


def met_studies(flash: ak.Array, ref: ak.Array, ablation: ak.Array | None, met: str = "MET") -> dict[str, float]:
    """Resolution per sumEt bin and the correlation with the upstream mismeasurement of one MET (PF or PUPPI)."""
    def met_xy(ev: ak.Array, name: str = met) -> tuple[np.ndarray, np.ndarray]:
        x = ak.to_numpy(ev[name].pt * np.cos(ev[name].phi) - ev.GenMET.pt * np.cos(ev.GenMET.phi))
        y = ak.to_numpy(ev[name].pt * np.sin(ev[name].phi) - ev.GenMET.pt * np.sin(ev.GenMET.phi))
        return x, y

    sumet = ak.to_numpy(ref[met].sumEt)
    edges = np.quantile(sumet, np.linspace(0, 1, 6))
    edges[-1] = np.nextafter(edges[-1], np.inf)  # the largest reference sumEt falls in the last bin
    fx, fy = met_xy(flash)
    rx, ry = met_xy(ref)
    fsum = ak.to_numpy(flash[met].sumEt)
    pf = response_profile(np.r_[fsum, fsum], np.r_[fx, fy], edges)
    pr = response_profile(np.r_[sumet, sumet], np.r_[rx, ry], edges)
    _rows(f"{met} x/y resolution (reco - gen, IQR/1.349) vs sumEt, diff % +- its bootstrap error",
          f"{'sumEt':>15s} {'ref':>7s} {'flash':>7s} {'diff %':>12s}")
    worst, worst_excess = 0.0, -np.inf
    for i in range(len(edges) - 1):
        d, e = ratio_diff(pf["resolution"][i], pf["resolution_err"][i], pr["resolution"][i], pr["resolution_err"][i])
        worst, worst_excess = max(worst, abs(d)), max(worst_excess, excess(d, e, 5.0))
        print(f"{edges[i]:7.0f}-{edges[i + 1]:<7.0f} {pr['resolution'][i]:7.2f} {pf['resolution'][i]:7.2f} {d:6.1f}+-{e:4.1f}")
    print(f"worst |diff| {worst:.1f} % (bar 5); largest excess over the bar {worst_excess:+.1f} sigma")

    def mismeasure_x(ev: ak.Array, name: str, gen_name: str, index: str) -> np.ndarray:
        matched = ev[name][ev[name][index] >= 0]
        gen = ev[gen_name][matched[index]]
        return ak.to_numpy(ak.sum(matched.pt * np.cos(matched.phi), axis=1) - ak.sum(gen.pt * np.cos(gen.phi), axis=1))

    def corr(ev: ak.Array, name: str = "Jet", gen_name: str = "GenJet", index: str = "genJetIdx") -> float:
        return float(np.corrcoef(met_xy(ev)[0], mismeasure_x(ev, name, gen_name, index))[0, 1])

    _rows(f"Correlation of ({met} - GenMET)_x with the jets' total mismeasurement (sum reco - gen)_x", "")
    print(f"reference {corr(ref):+.3f}   flash (upstream reco conditioning) {corr(flash):+.3f}"
          + (f"   flash GEN-only MET (ablation) {corr(ablation):+.3f}" if ablation is not None else ""))
    for name in ("Muon", "Electron", "Photon"):  # the gen-matched leptons and photons the chain drew, if any
        if name in flash.fields and "genPartIdx" in flash[name].fields:
            print(f"with the {name}s' (sum reco - gen)_x: reference {corr(ref, name, 'GenPart', 'genPartIdx'):+.3f}   "
                  f"flash {corr(flash, name, 'GenPart', 'genPartIdx'):+.3f}")
    headline = {f"{met} res worst %": worst, f"{met} res excess sig": worst_excess, f"{met} corr ref": corr(ref),
                f"{met} corr flash": corr(flash)}
    if met != "MET" and "MET" in flash.fields:  # how the two MET mismeasurements go together
        with_pf = {name: float(np.corrcoef(met_xy(ev)[0], met_xy(ev, "MET")[0])[0, 1]) for name, ev in (("ref", ref), ("flash", flash))}
        print(f"with the PF MET's (MET - GenMET)_x: reference {with_pf['ref']:+.3f}   flash {with_pf['flash']:+.3f}")
        headline |= {f"{met} corr PF ref": with_pf["ref"], f"{met} corr PF flash": with_pf["flash"]}
    return headline | ({f"{met} corr GEN-only": corr(ablation)} if ablation is not None else {})


def run_seed(chain: Chain, gen: ak.Array, ref: ak.Array, seed: int, ablation_unit: str | None, out: Path,
             oversample: int) -> dict[str, float]:
    """Generate with one seed, print every study and return its headline figures."""
    start = time.perf_counter()
    flash = chain.run(gen, seed=seed)
    elapsed = time.perf_counter() - start
    print(f"\n######## seed {seed}: chain {chain}, {len(ref)} held-out events, {elapsed:.2f} s in memory "
          f"({len(ref) / elapsed:,.0f} events/s, {torch.get_num_threads()} threads)")
    headline = {"chain events/s": len(ref) / elapsed}
    # (refsim samples made before refsim had a PUPPI MET have none to compare with)
    collections = [c for c in ("Muon", "Jet", "MET", "PuppiMET", *PARTIAL) if c in chain.outputs and c in ref.fields]
    compared = ref
    for name in PARTIAL:
        if name in collections:
            compared = ak.with_field(compared, covered_reference(chain, ref, name), name)
    metrics = validate(flash, compared, collections=collections, out_dir=out)
    for name in collections:
        headline |= print_collection(name, metrics)
    if "Jet" in collections:
        headline |= print_response("Jet", metrics["collections"]["Jet"])
        headline |= print_roc(metrics["collections"]["Jet"])
        headline |= jet_links_study(flash, ref)
    if "Photon" in collections:  # (without a photon unit the input's Photon passes through unchanged)
        headline |= photon_sources_study(flash, ref)
    headline |= unmatched_egamma_study(flash, ref, collections)
    for name in ALL_OBJECTS:
        if name in collections:
            headline |= all_objects_study(flash, ref, name)
    headline |= efficiency_studies(chain, gen, ref, collections, seed, oversample)
    if "Jet" in collections and any(u.spec.type == "multiplicity" for u in chain.units):
        headline |= jet_multiplicity_by_pileup(flash, ref)
        headline |= fake_pair(flash, ref)
        headline |= fake_jets_study(flash, ref)
    if "MET" in collections:
        ablation = None
        if ablation_unit:
            without = [u for u in chain.units if u.spec.output != "MET"]
            ablation = Chain([*without, ablation_unit], precision=chain.precision).run(gen, seed=seed)
        headline |= met_studies(flash, ref, ablation)
    if "PuppiMET" in collections:
        headline |= met_studies(flash, ref, None, "PuppiMET")
    print(f"report: {out / 'report.html'}")
    return headline


def print_seed_summary(per_seed: dict[int, dict[str, float]]) -> None:
    """One row per headline figure, one column per seed, then the mean and the spread (max - min)."""
    seeds = list(per_seed)
    _rows(f"Headline figures per generation seed (the same {len(seeds)} runs as above)",
          f"{'figure':22s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in seeds) + f" {'mean':>9s} {'spread':>9s}")
    for key in per_seed[seeds[0]]:
        values = [per_seed[s].get(key) for s in seeds]
        if any(v is None for v in values):
            continue
        print(f"{key:22s} " + " ".join(f"{v:9.3f}" for v in values) + f" {np.mean(values):9.3f} {np.ptp(values):9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="held-out refsim GEN+RECO files")
    parser.add_argument("--chain", default=",".join(DEFAULT_CHAIN))
    parser.add_argument("--ablation", default=None, help="a GEN-only MET unit to compare the correlation with")
    parser.add_argument("--out", type=Path, default=Path("bench_report"))
    parser.add_argument("--seeds", default="11", help="comma-separated generation seeds: every study per seed, then a summary")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="float32", choices=list(PRECISIONS), help="of the flows' conditioner networks")
    parser.add_argument("--refsim-events", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the headline figures per seed (and speed) as JSON, "
                        "for benchmarks/readme_tables.py")
    parser.add_argument("--efficiency-oversample", type=int, default=10,
                        help="generations averaged for the flash muon/electron/photon efficiency (its sampling error / sqrt(N))")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chain = Chain(args.chain.split(","), precision=args.precision)
    print(f"chain {chain}, {args.precision} conditioners")
    ref = read_events(args.input)
    # the GEN part (what a GEN file of these events holds) and any other input the chain reads but does not draw;
    # refsim's other reco collections stay out of the flash events
    gen = ref[[f for f in ref.fields if f in EVENT_ID_COLUMNS or f.startswith(GEN_PREFIXES) or (f in chain.inputs and f not in chain.outputs)]]
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {seed: run_seed(chain, gen, ref, seed, args.ablation, args.out / f"seed_{seed}" if len(seeds) > 1 else args.out,
                               args.efficiency_oversample) for seed in seeds}
    if len(seeds) > 1:
        print_seed_summary(per_seed)
    speed: dict[str, float] = {}
    if args.refsim_events:
        flash_rate = float(np.mean([h["chain events/s"] for h in per_seed.values()]))
        rate = detector_stage_rate("ttbar", args.refsim_events, 35.0, 5)
        speed = {"chain events/s": flash_rate, "refsim detector events/s": rate, "threads": torch.get_num_threads()}
        print(f"\nspeed: flashsim chain {flash_rate:,.0f} events/s vs refsim detector stage {rate:,.0f} events/s "
              f"(ratio {flash_rate / rate:.0f}x), same machine, same run")
    if args.json is not None:
        record = {"inputs": [str(p) for p in args.input], "events": len(ref), "chain": args.chain, "precision": args.precision, "seeds": seeds,
                  "per_seed": {str(s): h for s, h in per_seed.items()}, "speed": speed}
        args.json.write_text(json.dumps(record, indent=1))
        print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
