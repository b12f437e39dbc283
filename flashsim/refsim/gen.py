"""GEN-level NanoAOD collections from a Pythia batch: GenPart, GenJet, GenMET.

Everything is computed on flat numpy columns over the whole batch.  Ancestry questions
("is there a decayed hadron above me?") are answered with pointer jumping along
``mother1`` (log2(depth) vectorised gathers) instead of per-particle loops.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from . import _kin
from ._jets import cluster
from .params import DetectorParams
from .pythia import FlatEvents

GHOST_SCALE = 1e-18

# statusFlags bits as NanoAOD defines them
IS_PROMPT = 0
IS_DECAYED_LEPTON_HADRON = 1
IS_TAU_DECAY_PRODUCT = 2
IS_PROMPT_TAU_DECAY_PRODUCT = 3
IS_DIRECT_TAU_DECAY_PRODUCT = 4
IS_DIRECT_PROMPT_TAU_DECAY_PRODUCT = 5
IS_DIRECT_HADRON_DECAY_PRODUCT = 6
IS_HARD_PROCESS = 7
FROM_HARD_PROCESS = 8
IS_HARD_PROCESS_TAU_DECAY_PRODUCT = 9
IS_DIRECT_HARD_PROCESS_TAU_DECAY_PRODUCT = 10
FROM_HARD_PROCESS_BEFORE_FSR = 11
IS_FIRST_COPY = 12
IS_LAST_COPY = 13
IS_LAST_COPY_BEFORE_FSR = 14


def is_hadron(pid: np.ndarray) -> np.ndarray:
    a = np.abs(pid)
    x = a % 10000
    diquark = (x >= 1000) & ((x // 10) % 10 == 0)
    return (a > 100) & (a < 1_000_000) & ~diquark & (a != 990)


def heavy_flavour(pid: np.ndarray) -> np.ndarray:
    """Heaviest quark flavour contained in a hadron (5, 4, or <=3); 0 for non-hadrons."""
    a = np.abs(pid) % 10000
    q1 = np.where(a >= 1000, (a // 1000) % 10, 0)
    q2 = (a // 100) % 10
    q3 = (a // 10) % 10
    hf = np.maximum(np.maximum(q1, q2), q3)
    return np.where(is_hadron(pid), hf, 0)


def _anc_or(x: np.ndarray, parent: np.ndarray, max_iter: int = 16) -> np.ndarray:
    """For each node, OR of ``x`` over its strict ancestors (root maps to itself)."""
    s = x[parent].copy()
    p = parent.copy()
    for _ in range(max_iter):
        s |= s[p]
        pp = p[p]
        if np.array_equal(pp, p):
            break
        p = pp
    return s


def _fixpoint(ptr: np.ndarray, max_iter: int = 16) -> np.ndarray:
    """Follow pointers until they stop moving (pointer jumping)."""
    p = ptr.copy()
    for _ in range(max_iter):
        pp = p[p]
        if np.array_equal(pp, p):
            break
        p = pp
    return p


def _range_count(flag: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Number of True in flag[lo..hi] (inclusive, global indices; empty when hi < lo)."""
    cs = np.concatenate([[0], np.cumsum(flag.astype(np.int64))])
    hi2 = np.maximum(hi, lo - 1)
    return cs[hi2 + 1] - cs[lo]


def build_gen(ev: FlatEvents, params: DetectorParams) -> dict:
    """GEN collections (awkward) plus the private ``Particle`` list of stable particles.

    Returns a dict with keys GenPart, GenJet, GenMET, genWeight, Particle.
    """
    n_ev = ev.n_events
    counts = ev.counts
    starts = _kin.starts_of(counts)
    evt = _kin.event_index(counts)
    N = len(ev.pid)
    gidx = np.arange(N, dtype=np.int64)
    off = starts[evt]
    pid, st = ev.pid, ev.status
    a = np.abs(pid)

    m1g = np.where(ev.m1 > 0, off + ev.m1, off)
    m2g = np.where(ev.m2 > 0, off + ev.m2, m1g)
    d1g = np.where(ev.d1 > 0, off + ev.d1, gidx)
    d2g = np.where(ev.d2 > 0, off + ev.d2, d1g)
    root = gidx == off
    m1g[root] = gidx[root]
    has_d = ev.d1 > 0

    same_mother = (ev.m1 > 0) & (pid[m1g] == pid) | (ev.m2 > 0) & (pid[m2g] == pid)
    same_daughter = has_d & ((pid[d1g] == pid) | (pid[d2g] == pid))
    first_copy = ~same_mother
    last_copy = ~same_daughter
    n_daughters_gt1 = has_d & (d2g != d1g)
    fsr_branch = same_daughter & n_daughters_gt1

    hadron = is_hadron(pid)
    hf = heavy_flavour(pid)
    stable = st > 0
    # decayed hadrons come from hadronisation/decays (|status| >= 81); beams (-12) excluded
    decayed_lh = ((hadron & (np.abs(st) >= 81)) | (a == 11) | (a == 13) | (a == 15)) & last_copy & has_d & ~stable
    tau_decayed = (a == 15) & last_copy & has_d

    hard = (np.abs(st) >= 21) & (np.abs(st) <= 29)
    # copy chain: parent within the chain, and its first copy
    copy_parent = np.where((ev.m1 > 0) & (pid[m1g] == pid), m1g, gidx)
    copy_root = _fixpoint(copy_parent)
    from_hard = hard[copy_root] | hard
    direct_mother = m1g[copy_root]

    prompt = ~_anc_or(decayed_lh, m1g)
    tau_prod = _anc_or(tau_decayed, m1g) & (a != 15)
    prompt_tau_prod = _anc_or(tau_decayed & prompt, m1g) & (a != 15)
    direct_tau = tau_decayed[direct_mother] & (a != 15)
    direct_prompt_tau = (tau_decayed & prompt)[direct_mother] & (a != 15)
    direct_hadron = (hadron & decayed_lh)[direct_mother]
    hp_tau_prod = _anc_or(tau_decayed & from_hard, m1g) & (a != 15)
    direct_hp_tau = (tau_decayed & from_hard)[direct_mother] & (a != 15)
    # last copy before FSR: no FSR branching earlier in the copy chain, and either
    # this copy radiates or it is the last copy
    chain_branch_before = _anc_or(fsr_branch, copy_parent)
    last_before_fsr = ~chain_branch_before & (fsr_branch | last_copy)

    bits = [
        (IS_PROMPT, prompt),
        (IS_DECAYED_LEPTON_HADRON, decayed_lh),
        (IS_TAU_DECAY_PRODUCT, tau_prod),
        (IS_PROMPT_TAU_DECAY_PRODUCT, prompt_tau_prod),
        (IS_DIRECT_TAU_DECAY_PRODUCT, direct_tau),
        (IS_DIRECT_PROMPT_TAU_DECAY_PRODUCT, direct_prompt_tau),
        (IS_DIRECT_HADRON_DECAY_PRODUCT, direct_hadron),
        (IS_HARD_PROCESS, hard),
        (FROM_HARD_PROCESS, from_hard),
        (IS_HARD_PROCESS_TAU_DECAY_PRODUCT, hp_tau_prod),
        (IS_DIRECT_HARD_PROCESS_TAU_DECAY_PRODUCT, direct_hp_tau),
        (FROM_HARD_PROCESS_BEFORE_FSR, from_hard & last_before_fsr),
        (IS_FIRST_COPY, first_copy),
        (IS_LAST_COPY, last_copy),
        (IS_LAST_COPY_BEFORE_FSR, last_before_fsr),
    ]
    flags = np.zeros(N, dtype=np.int32)
    for bit, arr in bits:
        flags |= arr.astype(np.int32) << bit

    pt, eta, phi = _kin.pt_eta_phi(ev.px, ev.py, ev.pz)

    # weakly decaying B / C hadrons (no daughter hadron of the same heavy flavour)
    is_b = hf == 5
    is_c = hf == 4
    dec_range = has_d & (d2g >= d1g)
    lo, hi = d1g, np.where(dec_range, d2g, d1g - 1)
    weak_b = is_b & (_range_count(is_b, lo, hi) == 0) & ~root
    weak_c = is_c & (_range_count(is_c, lo, hi) == 0) & ~root
    b_anc = _anc_or(weak_b, m1g)
    c_anc = _anc_or(weak_c, m1g)

    # ---- pruned GenPart ---------------------------------------------------------------
    keep = (
        hard
        | (np.isin(a, (6, 23, 24, 25)) & (first_copy | last_copy))
        | (np.isin(a, (4, 5)) & last_copy & ~root & (np.abs(st) < 80))
        | ((a == 15) & last_copy)
        | (stable & (a == 13) & ((pt > 2.0) | prompt))
        | (stable & (a == 11) & ((pt > 5.0) | prompt))
        | (stable & np.isin(a, (12, 14, 16)) & (prompt | tau_prod | (pt > 5.0)))
        | weak_b
        | weak_c
    ) & ~root
    kept_or_root = keep | root
    nearest = _fixpoint(np.where(kept_or_root, gidx, m1g))
    mother_g = nearest[m1g]
    kept_rank = np.cumsum(keep) - 1  # global rank among kept
    kcount = np.bincount(evt[keep], minlength=n_ev)
    kept_start = _kin.starts_of(kcount)
    pruned_local = kept_rank - kept_start[evt]  # valid where keep
    # final-state photons as CMS keeps them (pT > 10 GeV or prompt), for e/gamma matching; appended after the
    # event's other kept particles so that their indices do not move (a photon is never a mother)
    photon = stable & (a == 22) & ((pt > 10.0) | prompt) & ~root & ~keep
    photon_rank = np.cumsum(photon) - 1
    pcount = np.bincount(evt[photon], minlength=n_ev)
    photon_local = kcount[evt] + photon_rank - _kin.starts_of(pcount)[evt]
    in_genpart = keep | photon
    local = np.where(keep, pruned_local, np.where(photon, photon_local, -1))
    mother_local = np.where(keep[mother_g] & ~root[mother_g], pruned_local[mother_g], -1)

    gp_status = np.where(stable, 1, np.where(decayed_lh, 2, np.abs(st)))
    gp = np.nonzero(in_genpart)[0]
    gp = gp[np.lexsort((local[gp], evt[gp]))]  # event by event, in GenPart order
    genpart = ak.unflatten(
        ak.zip(
            {
                "pt": pt[gp].astype(np.float32),
                "eta": eta[gp].astype(np.float32),
                "phi": phi[gp].astype(np.float32),
                "mass": ev.m[gp].astype(np.float32),
                "pdgId": pid[gp].astype(np.int32),
                "status": gp_status[gp].astype(np.int32),
                "statusFlags": flags[gp].astype(np.int32),
                "genPartIdxMother": mother_local[gp].astype(np.int32),
            }
        ),
        kcount + pcount,
    )

    # ---- stable particles for the detector ----------------------------------------------
    # lepton / photon origin (NanoAOD genPartFlav): 1 prompt, 15 from tau, 5 from b, 4 from c, 3 other
    origin = np.where(
        prompt,
        1,
        np.where(prompt_tau_prod, 15, np.where(b_anc, 5, np.where(c_anc, 4, 3))),
    ).astype(np.uint8)
    inflight = np.isin(np.abs(pid[direct_mother]), (211, 321, 130, 13))
    sel = stable
    scount = np.bincount(evt[sel], minlength=n_ev)
    particles = {
        "px": ev.px[sel].astype(np.float32),
        "py": ev.py[sel].astype(np.float32),
        "pz": ev.pz[sel].astype(np.float32),
        "e": ev.e[sel].astype(np.float32),
        "pdgId": pid[sel].astype(np.int32),
        "charge": ev.charge[sel].astype(np.int8),
        "vx": ev.vx[sel].astype(np.float32),
        "vy": ev.vy[sel].astype(np.float32),
        "vz": ev.vz[sel].astype(np.float32),
        "genPartIdx": local[sel].astype(np.int32),
        "genPartFlav": origin[sel],
    }
    particle = ak.unflatten(ak.zip(particles), scount)

    # ---- GenMET from neutrinos (not from decays in flight) ------------------------------
    nu = stable & np.isin(a, (12, 14, 16)) & ~inflight
    mex = _kin.group_sum(evt[nu], ev.px[nu], n_ev)
    mey = _kin.group_sum(evt[nu], ev.py[nu], n_ev)
    # GenMET = vector sum of neutrinos (the invisible momentum)
    genmet = ak.zip({"pt": np.hypot(mex, mey).astype(np.float32), "phi": np.arctan2(mey, mex).astype(np.float32)})

    # ---- GenJet: anti-kt on visible stable particles with B/C-hadron and parton ghosts --
    visible = stable & ~np.isin(a, (12, 14, 16))
    parton = ((a <= 5) | (a == 21)) & (np.abs(st) >= 71) & (np.abs(st) <= 79)
    ghost_b = weak_b
    ghost_c = weak_c & ~weak_b
    use = visible | ghost_b | ghost_c | parton
    kind = np.select([visible, ghost_b, ghost_c, parton], [0, 1, 2, 3], 0)
    scale = np.where(visible, 1.0, GHOST_SCALE)
    sel_idx = np.nonzero(use)[0]  # flat arrays are event-ordered, so events stay contiguous
    ucount = np.bincount(evt[sel_idx], minlength=n_ev)
    jets = cluster(
        ev.px[sel_idx] * scale[sel_idx],
        ev.py[sel_idx] * scale[sel_idx],
        ev.pz[sel_idx] * scale[sel_idx],
        ev.e[sel_idx] * scale[sel_idx],
        ucount,
        params.jet_r,
        params.genjet_pt_min,
    )
    nj = len(jets.px)
    jofc = jets.jet_of_const
    ckind = kind[sel_idx][jets.const_index]
    cpid = pid[sel_idx][jets.const_index]
    cpt = pt[sel_idx][jets.const_index]
    has_b = _kin.group_sum(jofc, (ckind == 1).astype(float), nj) > 0
    has_c = _kin.group_sum(jofc, (ckind == 2).astype(float), nj) > 0
    hadron_flavour = np.where(has_b, 5, np.where(has_c, 4, 0)).astype(np.uint8)
    # parton flavour: b ghost > c ghost > hardest parton ghost (sign kept)
    is_p = ckind == 3
    ca = np.abs(cpid)
    score = np.where(is_p, (ca == 5) * 2e6 + (ca == 4) * 1e6 + np.minimum(cpt, 9e5), -1.0)
    best = np.full(nj, -1, dtype=np.int64)
    if len(score):
        o = np.lexsort((score, jofc))
        last = np.r_[jofc[o][1:] != jofc[o][:-1], True]
        best[jofc[o][last]] = o[last]
    parton_flavour = np.zeros(nj, dtype=np.int32)
    ok = best >= 0
    ok[ok] = is_p[best[ok]]
    parton_flavour[ok] = cpid[best[ok]]
    jpt, jeta, jphi = _kin.pt_eta_phi(jets.px, jets.py, jets.pz)
    genjet = ak.unflatten(
        ak.zip(
            {
                "pt": jpt.astype(np.float32),
                "eta": jeta.astype(np.float32),
                "phi": jphi.astype(np.float32),
                "mass": _kin.mass(jets.px, jets.py, jets.pz, jets.e).astype(np.float32),
                "hadronFlavour": hadron_flavour,
                "partonFlavour": parton_flavour,
            }
        ),
        jets.counts,
    )
    return {
        "GenJet": genjet,
        "GenPart": genpart,
        "GenMET": genmet,
        "genWeight": ev.weight.astype(np.float32),
        "Particle": particle,
    }
