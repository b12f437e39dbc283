"""The particle-level parametric detector: GEN particles (+ pileup) -> Jet, Muon, Electron, Photon, MET.

Stages, all vectorised over the whole batch on flat numpy columns:

1. overlay pileup from the min-bias pool (each interaction at its own z);
2. tracker: acceptance, efficiency (falls with production radius), 1/pT smearing with
   tails, transverse/longitudinal impact parameters from the true production vertex
   plus resolution; CHS removes charged pileup whose dz is incompatible with the PV;
3. calorimeters: ECAL/HCAL/HF energy response and resolution (hadron non-compensation,
   thresholds, low-side and wide tails) for photons, neutral hadrons and every charged
   particle without a track;
4. muon system: efficiency and resolution, in-flight decays lose efficiency;
5. particle-flow candidates -> anti-kt 0.4 jets with L1 (rho x area) + L2L3 corrections,
   energy fractions, jet ID, q/g likelihood and b/c tagging from track IP significances,
   a pseudo secondary vertex and soft muons;
6. muon isolation from PF candidates (delta-beta corrected with the removed charged PU);
7. PF MET and PUPPI MET (``_puppi``);
8. electrons and photons (``_egamma``, on their own random stream), with the jets' electron indices.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from flashsim.crossrefs import ELECTRONS_IN_JETS
from flashsim.kinematics import delta_phi, wrap_phi

from . import _kin
from ._columns import collection, pt_order
from ._egamma import Particles, PFCandidates, reconstruct_egamma
from ._jets import cluster
from ._puppi import Candidates, puppi_met
from .params import DetectorParams
from .pileup import PileupPool, draw_pileup

MUON_MASS = 0.1056584
PION_MASS = 0.13957

CH_HAD, NE_HAD, CH_EM, NE_EM, MUON = 0, 1, 2, 3, 4


def _as_flat(coll, fields):
    counts = ak.to_numpy(ak.num(coll)).astype(np.int64)
    flat = ak.flatten(coll)
    return counts, {f: ak.to_numpy(flat[f]) for f in fields}


def _merge(counts_a, cols_a, counts_b, cols_b):
    """Concatenate two flat per-event groupings event by event (a first, then b)."""
    n_ev = len(counts_a)
    tot = counts_a + counts_b
    start = _kin.starts_of(tot)
    pos_a = np.repeat(start, counts_a) + _kin.ragged_arange(counts_a)
    pos_b = np.repeat(start + counts_a, counts_b) + _kin.ragged_arange(counts_b)
    out = {}
    for c in cols_a:
        arr = np.empty(int(tot.sum()), dtype=np.result_type(cols_a[c].dtype, cols_b[c].dtype))
        arr[pos_a] = cols_a[c]
        arr[pos_b] = cols_b[c]
        out[c] = arr
    is_b = np.zeros(int(tot.sum()), dtype=bool)
    is_b[pos_b] = True
    return tot, out, is_b, n_ev


def _rho_grid(evt, pt, eta, phi, n_ev, cell):
    """Median pT density over a fixed eta-phi grid (|eta| < 5), like fixedGridRhoFastjetAll."""
    n_eta = int(np.ceil(10.0 / cell))
    n_phi = max(int(round(2 * np.pi / cell)), 1)
    cell_area = (10.0 / n_eta) * (2 * np.pi / n_phi)
    ok = np.abs(eta) < 5.0
    ie = np.clip(((eta[ok] + 5.0) / 10.0 * n_eta).astype(np.int64), 0, n_eta - 1)
    ip = np.clip(((phi[ok] + np.pi) / (2 * np.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
    ncell = n_eta * n_phi
    key = evt[ok] * ncell + ie * n_phi + ip
    grid = np.bincount(key, weights=pt[ok], minlength=n_ev * ncell).reshape(n_ev, ncell)
    return np.median(grid, axis=1) / cell_area


def _lens(d, r):
    """Overlap area of two discs of radius r at distance d (0 for d >= 2r)."""
    d = np.minimum(d, 2 * r)
    return 2 * r * r * np.arccos(d / (2 * r)) - 0.5 * d * np.sqrt(np.maximum(4 * r * r - d * d, 0.0))


def simulate_detector(gen, pileup_pool: PileupPool | None, params: DetectorParams | None = None, rng=None,
                      pileup_mean: float = 0.0) -> dict:
    """Run the detector on a GEN batch.

    ``gen`` is the mapping/record array made by the GEN stage, with the private stable
    ``Particle`` list, ``GenJet`` and (optionally) ``Pileup``; if ``Pileup`` is absent it
    is drawn here with mean ``pileup_mean``.  Returns a dict of RECO collections: Jet,
    Muon, Electron and Photon (with ``params.egamma``), MET, PuppiMET, fixedGridRhoFastjetAll, PV_npvs (and Pileup when it
    was drawn here).
    """
    p = params or DetectorParams()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    eg_rng = rng.spawn(1)[0]  # e/gamma's own stream: the other collections are the same with it on or off
    n_ev = len(gen["Particle"])
    step = max(int(p.detector_pass_events), 1)
    if n_ev <= step:
        return _simulate(gen, pileup_pool, p, rng, eg_rng, pileup_mean)
    # bounded memory: run the batch in passes of ``detector_pass_events`` events
    keys = [k for k in (gen.fields if hasattr(gen, "fields") else gen.keys())]
    parts = []
    for lo in range(0, n_ev, step):
        sub = {k: gen[k][lo:lo + step] for k in keys if k in ("Particle", "GenJet", "Pileup")}
        parts.append(_simulate(sub, pileup_pool, p, rng, eg_rng, pileup_mean))
    return {k: ak.concatenate([q[k] for q in parts]) if isinstance(parts[0][k], ak.Array)
            else np.concatenate([q[k] for q in parts]) for k in parts[0]}


def _simulate(gen, pileup_pool, p, rng, eg_rng, pileup_mean) -> dict:
    part = gen["Particle"]
    n_ev = len(part)
    out: dict = {}

    fields = ("px", "py", "pz", "e", "pdgId", "charge", "vx", "vy", "vz", "genPartIdx", "genPartFlav")
    c_hs, hs = _as_flat(part, fields)
    # drop neutrinos up front
    a_hs = np.abs(hs["pdgId"])
    vis = ~np.isin(a_hs, (12, 14, 16))
    ev_hs = _kin.event_index(c_hs)
    c_hs = np.bincount(ev_hs[vis], minlength=n_ev).astype(np.int64)
    hs = {k: v[vis] for k, v in hs.items()}

    # ---- 1. pileup ------------------------------------------------------------------
    has_pu = hasattr(gen, "fields") and "Pileup" in gen.fields or (isinstance(gen, dict) and "Pileup" in gen)
    if has_pu:
        npu = ak.to_numpy(gen["Pileup"]["nPU"]).astype(np.int64)
    else:
        true, npu32 = draw_pileup(n_ev, pileup_mean, p.pu_profile_width, rng)
        npu = npu32.astype(np.int64)
        out["Pileup"] = ak.zip({"nPU": npu32, "nTrueInt": true}, depth_limit=1)
    if pileup_pool is not None and pileup_pool.n > 0 and npu.sum() > 0:
        pu, c_pu = pileup_pool.overlay(npu, rng, p.pu_vertex_sigma_z)
    else:
        pu, c_pu = {c: np.zeros(0, np.float32) for c in ("px", "py", "pz", "e", "vx", "vy", "vz")}, np.zeros(n_ev, np.int64)
        pu["pdgId"] = np.zeros(0, np.int32)
        pu["charge"] = np.zeros(0, np.float32)
    m = len(pu["px"])
    pu["genPartIdx"] = np.full(m, -1, np.int32)
    pu["genPartFlav"] = np.zeros(m, np.uint8)
    counts, P, is_pu, _ = _merge(c_hs, {k: hs[k] for k in fields}, c_pu, {k: pu[k] for k in fields})
    evt = _kin.event_index(counts)
    N = len(evt)

    px = P["px"].astype(np.float64)
    py = P["py"].astype(np.float64)
    pz = P["pz"].astype(np.float64)
    e = P["e"].astype(np.float64)
    pid = P["pdgId"]
    a = np.abs(pid)
    charged = P["charge"] != 0
    pt, eta, phi = _kin.pt_eta_phi(px, py, pz)
    pmag = np.sqrt(px * px + py * py + pz * pz)
    sin_t = np.divide(pt, pmag, out=np.zeros_like(pt), where=pmag > 0)
    vx = P["vx"].astype(np.float64)
    vy = P["vy"].astype(np.float64)
    vz = P["vz"].astype(np.float64)
    rho_prod = np.hypot(vx, vy)
    abseta = np.abs(eta)

    # ---- 2. tracker -------------------------------------------------------------------
    in_trk = charged & (abseta < p.trk_eta_max) & (pt > p.trk_pt_min) & (rho_prod < p.trk_rho_max)
    eff = p.trk_eff_plateau * (1 - np.exp(-pt / p.trk_eff_pt_turnon)) * np.exp(-rho_prod / p.trk_displaced_rho)
    tracked = in_trk & (rng.random(N) < eff)
    rel = np.hypot(p.trk_pt_res_a, p.trk_pt_res_b * pt) * (
        1 + p.trk_pt_res_endcap * np.clip((abseta - 1.2) / 1.3, 0, None)
    )
    curv_smear = 1 + rel * _kin.smear(rng, N, p.trk_tail_frac, p.trk_tail_scale)
    trk_scale = np.where(tracked, 1.0 / np.clip(curv_smear, 0.2, None), 1.0)
    safe_pt = np.maximum(pt, 1e-9)
    dxy_true = (-vx * py + vy * px) / safe_pt
    dz_true = vz - (vx * px + vy * py) / safe_pt * pz / safe_pt
    sig_dxy = np.hypot(p.trk_ip_res_a, p.trk_ip_res_b / (safe_pt * np.sqrt(np.maximum(sin_t, 1e-3))))
    sig_dz = np.hypot(p.trk_dz_res_a, p.trk_dz_res_b / (safe_pt * np.maximum(sin_t, 1e-3) ** 1.5))
    dxy = dxy_true + sig_dxy * _kin.smear(rng, N, p.trk_ip_tail_frac, p.trk_ip_tail_scale)
    dz = dz_true + sig_dz * _kin.smear(rng, N, p.trk_ip_tail_frac, p.trk_ip_tail_scale)
    chs_removed = tracked & is_pu & (np.abs(dz) > p.chs_dz_cut)

    # ---- 4. muon system (before calorimetry: reco muons become PF muons) ---------------
    is_mu = a == 13
    mu_region = np.where(abseta < 0.9, 0, np.where(abseta < 1.2, 1, 2))
    mu_eff = np.where(mu_region == 0, p.mu_eff_barrel, p.mu_eff_endcap) * (
        1 - np.exp(-np.clip(pmag - p.mu_p_min, 0, None) / 1.0)
    )
    decay_in_flight = rho_prod > 10.0
    mu_eff = mu_eff * np.where(decay_in_flight, np.exp(-rho_prod / p.mu_eff_decay_rho), 1.0)
    mu_reco = is_mu & (abseta < p.mu_eta_max) & (rng.random(N) < mu_eff)
    mu_a = np.select([mu_region == 0, mu_region == 1], [p.mu_res_barrel, p.mu_res_overlap], p.mu_res_endcap)
    mu_rel = np.hypot(mu_a, p.mu_res_b * pt)
    mu_scale = 1.0 / np.clip(1 + mu_rel * _kin.smear(rng, N, p.mu_tail_frac, p.mu_tail_scale), 0.2, None)

    # ---- 3. calorimeters for everything without a track / muon ------------------------
    photon_like = (a == 22) | ((a == 11) & ~tracked)
    calo = ~tracked & ~mu_reco & ~is_mu & (abseta < p.calo_eta_max)
    em = calo & photon_like
    had = calo & ~photon_like
    hf = abseta >= p.hf_eta_min
    g = rng.standard_normal(N)
    safe_e = np.maximum(e, 1e-6)
    # EM
    em_res = np.where(
        hf,
        np.hypot(p.hf_stoch / np.sqrt(safe_e), p.hf_const),
        np.sqrt((p.ecal_stoch / np.sqrt(safe_e)) ** 2 + (p.ecal_noise / safe_e) ** 2 + p.ecal_const**2),
    )
    em_resp = 1 + em_res * g
    low_tail = rng.random(N) < p.ecal_tail_frac
    em_resp = np.where(low_tail, em_resp * (1 - rng.exponential(p.ecal_low_tail_mean, N)), em_resp)
    # hadronic
    h_mean = p.hcal_response_inf * (1 - p.hcal_response_a * safe_e ** (-p.hcal_response_m))
    h_res = np.where(hf, np.hypot(p.hf_stoch / np.sqrt(safe_e), p.hf_const),
                     np.hypot(p.hcal_stoch / np.sqrt(safe_e), p.hcal_const))
    h_g = np.where(rng.random(N) < p.hcal_tail_frac, g * p.hcal_tail_scale, g)
    h_resp = h_mean * (1 + h_res * h_g)
    e_meas = np.where(em, e * em_resp, np.where(had, e * h_resp, 0.0))
    thr = np.where(hf, p.hf_threshold, np.where(em, p.ecal_threshold, p.hcal_threshold))
    calo_ok = (em | had) & (e_meas > thr)
    c_eta = eta + p.calo_pos_res * rng.standard_normal(N)
    c_phi = phi + p.calo_pos_res * rng.standard_normal(N)

    # ---- 5. PF candidates -------------------------------------------------------------
    pf_mu = mu_reco
    pf_trk = tracked & ~mu_reco & ~chs_removed
    pf_calo = calo_ok
    pf = pf_mu | pf_trk | pf_calo
    cat = np.full(N, -1, np.int8)
    cat[pf_trk] = np.where(a[pf_trk] == 11, CH_EM, CH_HAD)
    cat[pf_calo] = np.where(em[pf_calo], NE_EM, NE_HAD)
    cat[pf_mu] = MUON
    scale = np.where(pf_mu, mu_scale, np.where(pf_trk, trk_scale, 1.0))
    # momentum of PF candidates
    cpx = px * scale
    cpy = py * scale
    cpz = pz * scale
    ce = np.where(pf_mu, np.sqrt((pmag * scale) ** 2 + MUON_MASS**2),
                  np.where(pf_trk, np.sqrt((pmag * scale) ** 2 + PION_MASS**2), e))
    cpt_calo = e_meas / np.cosh(c_eta)
    cpx = np.where(pf_calo, cpt_calo * np.cos(c_phi), cpx)
    cpy = np.where(pf_calo, cpt_calo * np.sin(c_phi), cpy)
    cpz = np.where(pf_calo, cpt_calo * np.sinh(c_eta), cpz)
    ce = np.where(pf_calo, e_meas, ce)

    pf_idx = np.nonzero(pf)[0]
    pf_evt = evt[pf_idx]
    pf_counts = np.bincount(pf_evt, minlength=n_ev).astype(np.int64)
    qpx, qpy, qpz, qe = cpx[pf_idx], cpy[pf_idx], cpz[pf_idx], ce[pf_idx]
    qpt, qeta, qphi = _kin.pt_eta_phi(qpx, qpy, qpz)
    qcat = cat[pf_idx]

    # rho, MET
    rho = _rho_grid(pf_evt, qpt, qeta, qphi, n_ev, p.rho_grid)
    met_sel = np.abs(qeta) < p.met_eta_max
    mex = -_kin.group_sum(pf_evt[met_sel], qpx[met_sel], n_ev)
    mey = -_kin.group_sum(pf_evt[met_sel], qpy[met_sel], n_ev)
    sumet = _kin.group_sum(pf_evt[met_sel], qpt[met_sel], n_ev)
    out["MET"] = ak.zip(
        {"pt": np.hypot(mex, mey).astype(np.float32), "phi": np.arctan2(mey, mex).astype(np.float32),
         "sumEt": sumet.astype(np.float32)}
    )
    out["fixedGridRhoFastjetAll"] = rho.astype(np.float32)
    out["PV_npvs"] = (1 + rng.binomial(npu, p.pv_reco_eff)).astype(np.int32)
    # PUPPI MET: the PF candidates and the charged pileup the vertex association removed
    rm = np.nonzero(chs_removed)[0]
    rpx, rpy = px[rm] * trk_scale[rm], py[rm] * trk_scale[rm]
    rpt, reta, rphi = _kin.pt_eta_phi(rpx, rpy, pz[rm] * trk_scale[rm])
    q_charged = (pf_trk | pf_mu)[pf_idx]
    none_q, none_r = np.zeros(len(pf_idx), bool), np.zeros(len(rm), bool)
    puppi_cands = Candidates(np.concatenate([pf_evt, evt[rm]]), np.concatenate([qpt, rpt]), np.concatenate([qeta, reta]),
                       np.concatenate([qphi, rphi]), np.concatenate([qpx, rpx]), np.concatenate([qpy, rpy]),
                       np.concatenate([q_charged, none_r]), np.concatenate([none_q, ~none_r]),
                       np.concatenate([qcat == NE_EM, none_r]))
    out["PuppiMET"] = ak.zip(puppi_met(puppi_cands, out["PV_npvs"], n_ev, p))

    # ---- jets ---------------------------------------------------------------------------
    # per-PF-candidate tagging inputs
    q_track = pf_trk[pf_idx] | pf_mu[pf_idx]  # reco muons always have an inner track
    jets, jet_counts, pf_jet = _jets(p, rng, n_ev, pf_counts, qpx, qpy, qpz, qe, qpt, qeta, qphi, qcat, q_track,
                                     vx[pf_idx], vy[pf_idx], np.where(dxy_true >= 0, dxy, -dxy)[pf_idx], sig_dxy[pf_idx], px[pf_idx],
                                     py[pf_idx], rho, gen["GenJet"])

    # ---- muons ----------------------------------------------------------------------------
    out["Muon"] = _muons(p, rng, n_ev, evt, mu_reco, pt, eta, phi, pid, scale, dxy, dz, sig_dxy, sig_dz,
                         decay_in_flight, P["genPartIdx"], P["genPartFlav"], is_pu,
                         pf_idx, pf_counts, qpt, qeta, qphi, qcat, chs_removed)

    # ---- electrons and photons ----------------------------------------------------------------
    if p.egamma:
        particles = Particles(evt, pt, eta, phi, e, pid, P["charge"], tracked, dxy, dz, sig_dxy, sig_dz,
                              P["genPartIdx"], P["genPartFlav"])
        cands = PFCandidates(pf_idx, pf_counts, qpt, qeta, qphi, np.isin(qcat, (CH_HAD, CH_EM, MUON)), qcat == NE_EM, pf_jet)
        out["Electron"], out["Photon"] = reconstruct_egamma(p, eg_rng, n_ev, particles, cands, rho)
        jets.update(ELECTRONS_IN_JETS.compute(out["Electron"].jetIdx, jet_counts))
    out["Jet"] = ak.unflatten(ak.zip(jets), jet_counts)
    return out


def _jets(p, rng, n_ev, pf_counts, qpx, qpy, qpz, qe, qpt, qeta, qphi, qcat, q_track,
          qvx, qvy, qdxy, qsig, tpx, tpy, rho, genjets):
    """Jets as flat columns, their counts per event, and each PF candidate's jet (index within its event's jets, -1)."""
    R = p.jet_r
    raw_min = min(8.0, p.jet_pt_min)
    J = cluster(qpx, qpy, qpz, qe, pf_counts, R, raw_min)
    nj = len(J.px)
    jev = _kin.event_index(J.counts)
    jpt, jeta, jphi = _kin.pt_eta_phi(J.px, J.py, J.pz)
    ci = J.const_index
    jc = J.jet_of_const
    ccat = qcat[ci]
    ce = qe[ci]

    def esum(mask):
        return _kin.group_sum(jc[mask], ce[mask], nj)

    e_raw = np.maximum(J.e, 1e-9)
    e_ch, e_ne, e_chem, e_neem, e_mu = (esum(ccat == k) for k in (CH_HAD, NE_HAD, CH_EM, NE_EM, MUON))
    n_const = J.const_counts
    n_charged = _kin.group_sum(jc, np.isin(ccat, (CH_HAD, CH_EM, MUON)).astype(float), nj)
    n_neutral = n_const - n_charged

    # --- area: pi R^2 minus overlaps with harder jets, with a small ghost-like jitter
    area = np.full(nj, np.pi * R * R)
    if nj:
        jl = ak.unflatten(np.arange(nj), J.counts)
        pairs = ak.combinations(jl, 2)
        i0 = ak.to_numpy(ak.flatten(pairs["0"]))
        i1 = ak.to_numpy(ak.flatten(pairs["1"]))
        d = np.hypot(jeta[i0] - jeta[i1], delta_phi(jphi[i0], jphi[i1]))
        np.subtract.at(area, i1, _lens(d, R))
        area = np.maximum(area, 0.05) * (1 + p.jet_area_jitter * rng.standard_normal(nj))
        # acceptance edge at |eta| = 5
        area *= np.clip((5.0 + R - np.abs(jeta)) / (2 * R), 0, 1)

    # --- corrections: L1 offset, then L2L3 response
    pt_l1 = jpt - p.jec_offset_scale * rho[jev] * area
    f1 = np.clip(pt_l1, 1e-3, None) / np.maximum(jpt, 1e-9)
    resp = jec_response(p, pt_l1, jeta)
    f = f1 / resp
    f = f * np.clip(1 + p.jet_confusion_const * _kin.smear(rng, nj, p.jet_confusion_tail_frac,
                                                       p.jet_confusion_tail_scale), 0.3, None)
    cpt = jpt * f
    cmass = _kin.mass(J.px, J.py, J.pz, J.e) * f

    # --- jet ID (CMS tight / tightLepVeto style)
    chHEF, neHEF, chEmEF, neEmEF, muEF = (x / e_raw for x in (e_ch, e_ne, e_chem, e_neem, e_mu))
    ae = np.abs(jeta)
    central = (neHEF < 0.90) & (neEmEF < 0.90) & (n_const > 1)
    tracker = central & (chHEF > 0) & (n_charged > 0)
    tight = np.select(
        [ae <= 2.6, ae <= 2.7, ae <= 3.0],
        [tracker, central, (neEmEF > 0.01) & (neEmEF < 0.99) & (n_neutral > 1)],
        (neEmEF < 0.90) & (n_neutral > 10) & (neHEF > 0.02),
    )
    lepveto = np.where(ae <= 2.7, (muEF < 0.8) & (chEmEF < 0.8), True)
    jet_id = np.where(tight, np.where(lepveto, 6, 2), 0).astype(np.int32)

    # --- q/g likelihood from multiplicity, width and pT dispersion
    cpt_c = qpt[ci]
    dr2 = (qeta[ci] - jeta[jc]) ** 2 + delta_phi(qphi[ci], jphi[jc]) ** 2
    spt = np.maximum(_kin.group_sum(jc, cpt_c, nj), 1e-9)
    width = _kin.group_sum(jc, cpt_c * np.sqrt(dr2), nj) / spt
    ptd = np.sqrt(_kin.group_sum(jc, cpt_c**2, nj)) / spt
    mult = _kin.group_sum(jc, ((cpt_c > 1.0) | np.isin(ccat, (CH_HAD, CH_EM, MUON))).astype(float), nj)
    lnpt = np.log(np.clip(cpt, 15, 3000))
    # quark-likeness: fewer (charged) constituents than expected at this pT, narrow, hard
    qg_logit = (1.0 - 0.17 * (n_charged - 2.0 * lnpt) - 0.05 * (mult - 2.2 * lnpt - 2.0)
                - 7.0 * width - 3.5 * (ptd - 0.4))
    qgl = 1 / (1 + np.exp(-qg_logit))
    qgl = np.where(ae < 4.7, qgl, -1.0)

    # --- flavour tagging from track impact parameters
    trk = q_track[ci] & (cpt_c > p.tag_track_pt_min)
    # lifetime sign: transverse point of closest approach projected on the jet direction
    ux, uy = tpx[ci], tpy[ci]
    un = np.maximum(np.hypot(ux, uy), 1e-9)
    ux, uy = ux / un, uy / un
    vx, vy = qvx[ci], qvy[ci]
    vdotu = vx * ux + vy * uy
    rx, ry = vx - vdotu * ux, vy - vdotu * uy
    proj = rx * np.cos(jphi[jc]) + ry * np.sin(jphi[jc])
    sign = np.where(proj < 0, -1.0, 1.0)
    # qdxy = |d0_true| + noise; the lifetime sign comes from the geometry: for prompt
    # tracks it is arbitrary and the distribution symmetric, as in data
    sip = sign * qdxy[ci]
    sig = np.clip(sip / qsig[ci], -p.tag_sip_clip, p.tag_sip_clip)
    tj, tsig = jc[trk], sig[trk]
    s1 = _kin.kth_largest(tj, tsig, nj, 0, -5.0)
    s2 = _kin.kth_largest(tj, tsig, nj, 1, -5.0)
    s3 = _kin.kth_largest(tj, tsig, nj, 2, -5.0)
    s1, s2, s3 = (np.clip(s, -5.0, p.tag_sip_clip) for s in (s1, s2, s3))
    sv = trk & (sig > p.tag_sip_vertex)
    n_sv = _kin.group_sum(jc[sv], np.ones(sv.sum()), nj)
    svpx, svpy, svpz = (_kin.group_sum(jc[sv], x[ci][sv], nj) for x in (qpx, qpy, qpz))
    sv_p2 = qpx[ci] ** 2 + qpy[ci] ** 2 + qpz[ci] ** 2
    sve = _kin.group_sum(jc[sv], np.sqrt(sv_p2[sv] + PION_MASS**2), nj)
    m_sv = np.where(n_sv >= 2, _kin.mass(svpx, svpy, svpz, sve), 0.0)
    # soft muon: pT relative to the jet axis of the hardest muon constituent
    mu_c = ccat == MUON
    jx, jy, jz = J.px[jc], J.py[jc], J.pz[jc]
    jn = np.sqrt(jx * jx + jy * jy + jz * jz) + 1e-9
    mx, my, mz = qpx[ci], qpy[ci], qpz[ci]
    cross = np.sqrt((my * jz - mz * jy) ** 2 + (mz * jx - mx * jz) ** 2 + (mx * jy - my * jx) ** 2) / jn
    mu_c = mu_c & (cpt_c > 5.0)
    ptrel = _kin.group_max(jc[mu_c], cross[mu_c], nj, fill=0.0)
    soft_mu = np.clip(ptrel / 2.0, 0, 1.5)
    feats = (s1, s2, s3, np.minimum(n_sv, 6), np.minimum(m_sv, 5.0), np.minimum(m_sv, 2.0), soft_mu)
    wb, wc = p.tag_weights_b, p.tag_weights_c
    lb = wb[0] + sum(w * x for w, x in zip(wb[1:], feats))
    lc = wc[0] + sum(w * x for w, x in zip(wc[1:], feats))
    mx_l = np.maximum(np.maximum(lb, lc), 0.0)
    eb, ec, el = np.exp(lb - mx_l), np.exp(lc - mx_l), np.exp(-mx_l)
    tot = eb + ec + el
    pb, pc, pl = eb / tot, ec / tot, el / tot
    has_trk = _kin.group_sum(tj, np.ones(len(tj)), nj) > 0
    btag = np.where(has_trk & (ae < p.trk_eta_max), pb, -1.0)
    cvb = np.where(has_trk & (ae < p.trk_eta_max), pc / (pc + pb), -1.0)
    cvl = np.where(has_trk & (ae < p.trk_eta_max), pc / (pc + pl), -1.0)

    # --- selection, ordering by corrected pT, gen matching
    keep = cpt > p.jet_pt_min
    order = np.lexsort((-cpt, jev))
    order = order[keep[order]]
    counts = np.bincount(jev[order], minlength=n_ev)
    cols = {
        "pt": cpt, "eta": jeta, "phi": jphi, "mass": cmass, "area": area,
        "nConstituents": np.minimum(n_const, 255).astype(np.uint8),
        "chHEF": chHEF, "neHEF": neHEF, "chEmEF": chEmEF, "neEmEF": neEmEF, "muEF": muEF,
        "rawFactor": 1 - 1 / np.maximum(f, 1e-9),
        "btagDeepFlavB": btag, "btagDeepFlavCvB": cvb, "btagDeepFlavCvL": cvl, "qgl": qgl,
        "jetId": jet_id,
        # written where the NanoAOD version asked for has them: v7's C probability, v15's multiplicities
        "btagDeepFlavC": np.where(has_trk & (ae < p.trk_eta_max), pc, -1.0),
        "chMultiplicity": np.minimum(n_charged, 255).astype(np.uint8),
        "neMultiplicity": np.minimum(n_neutral, 255).astype(np.uint8),
    }
    if p.extra.get("debug_features"):
        # tagger / q-g inputs, for tuning the fixed formulas (not NanoAOD branches)
        cols.update({"_s1": s1, "_s2": s2, "_s3": s3, "_nsv": n_sv, "_msv": m_sv, "_softmu": soft_mu,
                     "_mult": mult, "_width": width, "_ptd": ptd, "_nch": n_charged})
    flat = {}
    for k, v in cols.items():
        v = v[order]
        flat[k] = v if v.dtype in (np.uint8, np.int32) else v.astype(np.float32)
    gidx, hfl, pfl = _match_genjets(flat["eta"], flat["phi"], counts, genjets, p.jet_match_dr)
    flat["genJetIdx"] = gidx
    flat["hadronFlavour"] = hfl
    flat["partonFlavour"] = pfl
    # each PF candidate's jet, as an index within its event's output jets (-1: in no kept jet)
    jet_local = np.full(nj, -1, np.int64)
    jet_local[order] = _kin.ragged_arange(counts)
    pf_jet = np.full(len(qpt), -1, np.int64)
    pf_jet[ci] = jet_local[jc]
    return flat, counts, pf_jet


# refsim has one toy b/c tagger and one toy q/g discriminant; Run-3 files carry them under PNet's names
RUN3_TAGGER_NAMES = {"btagDeepFlavB": "btagPNetB", "btagDeepFlavCvB": "btagPNetCvB", "btagDeepFlavCvL": "btagPNetCvL",
                     "qgl": "btagPNetQvG"}


def tagger_names(events: ak.Array, run: int) -> ak.Array:
    """Events with the toy taggers of ``Jet`` named as NanoAOD of LHC ``run`` names its taggers."""
    if run < 3 or "Jet" not in events.fields:
        return events
    jets = events.Jet
    renamed = ak.zip({RUN3_TAGGER_NAMES.get(f, f): jets[f] for f in jets.fields})
    return ak.with_field(events, renamed, "Jet")


def jec_response(p: DetectorParams, pt, eta):
    """Tabulated L2L3 response R(|eta|, pT), linear in log pT between nodes."""
    edges = np.asarray(p.jec_eta_edges, dtype=np.float64)
    nodes = np.log(np.asarray(p.jec_pt_nodes, dtype=np.float64))
    table = np.asarray(p.jec_response, dtype=np.float64).reshape(len(edges) - 1, len(nodes))
    ib = np.clip(np.searchsorted(edges, np.abs(eta), side="right") - 1, 0, len(edges) - 2)
    x = np.clip(np.log(np.maximum(pt, 1e-3)), nodes[0], nodes[-1])
    j = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, len(nodes) - 2)
    w = (x - nodes[j]) / (nodes[j + 1] - nodes[j])
    return table[ib, j] * (1 - w) + table[ib, j + 1] * w


def _match_genjets(eta, phi, counts, genjets, max_dr):
    """Nearest GenJet within max_dr: (genJetIdx, hadronFlavour, partonFlavour)."""
    n = len(eta)
    gcounts = ak.to_numpy(ak.num(genjets)).astype(np.int64)
    geta = ak.to_numpy(ak.flatten(genjets.eta)).astype(np.float64)
    gphi = ak.to_numpy(ak.flatten(genjets.phi)).astype(np.float64)
    ghf = ak.to_numpy(ak.flatten(genjets.hadronFlavour)).astype(np.int32)
    gpf = ak.to_numpy(ak.flatten(genjets.partonFlavour)).astype(np.int32)
    jev = _kin.event_index(counts)
    gstart = _kin.starts_of(gcounts)
    npair = gcounts[jev]
    ji = np.repeat(np.arange(n), npair)
    gi = np.repeat(gstart[jev], npair) + _kin.ragged_arange(npair)
    dr = np.hypot(eta[ji] - geta[gi], delta_phi(phi[ji], gphi[gi]))
    best = np.full(n, -1, np.int64)
    if len(dr):
        o = np.lexsort((dr, ji))
        first = np.r_[True, ji[o][1:] != ji[o][:-1]]
        sel = o[first]
        ok = dr[sel] < max_dr
        best[ji[sel][ok]] = gi[sel][ok]
    has = best >= 0
    idx = np.where(has, best - gstart[jev], -1).astype(np.int32)
    hfl = np.where(has, ghf[np.maximum(best, 0)] if len(ghf) else 0, 0).astype(np.int32)
    pfl = np.where(has, gpf[np.maximum(best, 0)] if len(gpf) else 0, 0).astype(np.int32)
    return idx, hfl, pfl


def _muons(p, rng, n_ev, evt, mu_reco, pt, eta, phi, pid, scale, dxy, dz, sig_dxy, sig_dz,
           decay_in_flight, gen_idx, gen_flav, is_pu, pf_idx, pf_counts, qpt, qeta, qphi, qcat, chs_removed):
    mpt = pt * scale
    sel = mu_reco & (mpt > p.mu_pt_min)
    mi = np.nonzero(sel)[0]
    m_evt = evt[mi]
    n_mu = len(mi)
    m_pt = mpt[mi]
    m_eta = eta[mi] + 1e-3 * rng.standard_normal(n_mu)
    m_phi = wrap_phi(phi[mi] + 1e-3 * rng.standard_normal(n_mu))
    q = -np.sign(pid[mi]).astype(np.int32)
    flip = rng.random(n_mu) < p.mu_charge_flip_b * m_pt
    q = np.where(flip, -q, q).astype(np.int32)
    dxy_cm, dz_cm = dxy[mi] / 10.0, dz[mi] / 10.0
    ip3d = np.hypot(dxy_cm, dz_cm)
    sip3d = ip3d / np.hypot(sig_dxy[mi], sig_dz[mi]) * 10.0

    # isolation: all PF candidates of the event within the cone, minus the muon itself
    # (its own PF candidate is the one built from the same particle)
    pos_of = np.full(len(evt), -1, np.int64)
    pos_of[pf_idx] = np.arange(len(pf_idx))
    self_pf = pos_of[mi]
    mj, cj = _kin.event_pairs(m_evt, pf_counts)
    dr = np.hypot(m_eta[mj] - qeta[cj], delta_phi(m_phi[mj], qphi[cj]))
    not_self = cj != self_pf[mj]
    chg = np.isin(qcat[cj], (CH_HAD, CH_EM, MUON))
    neu = ~chg & (qpt[cj] > 0.5)
    # charged pileup removed by CHS (for the delta-beta correction)
    rem = np.nonzero(chs_removed & (pt > 0.5))[0]
    r_evt = evt[rem]
    r_counts = np.bincount(r_evt, minlength=n_ev)
    order_r = rem[np.argsort(r_evt, kind="stable")]
    rj, rk = _kin.event_pairs(m_evt, r_counts)
    rk = order_r[rk]
    rdr = np.hypot(m_eta[rj] - eta[rk], delta_phi(m_phi[rj], phi[rk]))
    iso = {}
    for tag, cone in (("03", 0.3), ("04", 0.4)):
        inc = (dr < cone) & not_self
        ch = _kin.group_sum(mj[inc & chg], qpt[cj][inc & chg], n_mu)
        ne = _kin.group_sum(mj[inc & neu], qpt[cj][inc & neu], n_mu)
        pu = _kin.group_sum(rj[rdr < cone], pt[rk][rdr < cone], n_mu)
        iso[tag] = (ch + np.maximum(ne - 0.5 * pu, 0.0)) / np.maximum(m_pt, 1e-9)

    dif = decay_in_flight[mi]
    medium = rng.random(n_mu) < p.mu_medium_eff * np.where(dif, 0.6, 1.0)
    tight = medium & (np.abs(dxy_cm) < 0.2) & (np.abs(dz_cm) < 0.5) & (rng.random(n_mu) < p.mu_tight_eff)
    g_idx = np.where(is_pu[mi], -1, gen_idx[mi]).astype(np.int32)
    g_flav = np.where(g_idx >= 0, gen_flav[mi], 0).astype(np.uint8)

    order, counts, _ = pt_order(m_evt, m_pt, np.ones(n_mu, bool), n_ev)
    cols = {
        "pt": m_pt, "eta": m_eta, "phi": m_phi, "mass": np.full(n_mu, MUON_MASS),
        "charge": q, "dxy": dxy_cm, "dz": dz_cm, "ip3d": ip3d, "sip3d": sip3d,
        "pfRelIso03_all": iso["03"], "pfRelIso04_all": iso["04"],
        "looseId": np.ones(n_mu, bool), "mediumId": medium, "tightId": tight,
        "genPartIdx": g_idx, "genPartFlav": g_flav,
    }
    return collection(cols, order, counts)
