"""Electrons and photons of the parametric detector: ECAL clusters of the stable EM particles, GSF electrons,
photons, their shower shapes, isolation, IDs and gen matching, as CMS NanoAOD stores them.

Clusters: EM particles (photons, electrons) above ``eg_seed_pt_min`` seed a cluster unless a higher-ranked seed
(electrons first, then pT) lies within ``eg_cluster_dr``; every EM particle joins its nearest seed within that
distance, so a pi0's two photons make one cluster with a wide ``sieie``.  Photons convert with a probability
set by the tracker material, electrons radiate (Bethe-Heitler), both widen the shower in phi (lower R9) and
give the energy its low-side tail.  Electrons come from electron clusters (prompt, tau, b, c, light),
from conversions (genPartFlav 22 when the photon is prompt) and from tracked charged hadrons (fakes, 0);
photons from every cluster, so an electron is also a photon (``photonIdx`` / ``electronIdx``, and the
photon's ``electronVeto`` and ``pixelSeed``).  Every draw comes from the e/gamma stream: the other
collections do not change when e/gamma is switched on.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from flashsim.kinematics import delta_phi, wrap_phi

from . import _kin
from ._columns import collection, pt_order
from .params import DetectorParams

ELECTRON_MASS = 0.000511
ELECTRON, CONVERSION, HADRON = 0, 1, 2  # what an electron candidate comes from


@dataclass
class Particles:
    """Flat per-particle columns of a detector pass (hard scatter and pileup, event-ordered)."""

    evt: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    e: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    tracked: np.ndarray
    dxy: np.ndarray  # mm, measured
    dz: np.ndarray
    sig_dxy: np.ndarray
    sig_dz: np.ndarray
    gen_idx: np.ndarray  # GenPart index (-1: not kept, or pileup)
    gen_flav: np.ndarray  # origin: 1 prompt, 15 tau, 5 b, 4 c, 3 other


@dataclass
class PFCandidates:
    """The PF candidates of a detector pass: the particle each comes from, per-event counts, kinematics,
    whether charged or a photon, and the (output-ordered, per-event) index of the jet holding it, -1 if none."""

    particle: np.ndarray
    counts: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    charged: np.ndarray
    photon: np.ndarray
    jet: np.ndarray


def reconstruct_egamma(p: DetectorParams, rng: np.random.Generator, n_ev: int, part: Particles, pf: PFCandidates,
                       rho: np.ndarray) -> tuple[ak.Array, ak.Array]:
    """The Electron and Photon collections (pT-ordered, NanoAOD v9 names and types) of a detector pass."""
    cl = _clusters(p, rng, n_ev, part)
    pos_of = np.full(len(part.evt), -1, np.int64)
    pos_of[pf.particle] = np.arange(len(pf.particle))

    # ---- photons: every cluster
    pho_pt = cl.energy / np.cosh(cl.eta)
    pho_hoe = cl.hoe_tower
    is_pho = (pho_pt > p.pho_pt_min) & (rng.random(len(cl.evt)) < p.pho_eff) & (cl.hoe < p.pho_hoe_max)

    # ---- electrons: electron clusters, conversion legs, hadron fakes
    ae_seed = np.abs(cl.eta)
    eff = _region(p, ae_seed, p.ele_eff_barrel, p.ele_eff_gap, p.ele_eff_endcap) * (
        1 - np.exp(-np.clip(part.pt[cl.seed] - 2.0, 0, None) / p.ele_eff_pt_turnon))
    from_ele = cl.is_electron & (rng.random(len(cl.evt)) < eff)
    from_conv = cl.converted & (rng.random(len(cl.evt)) < p.ele_conversion_as_electron)
    a = np.abs(part.pid)
    hadron = (part.tracked & (part.charge != 0) & (a != 11) & (a != 13) & (part.pt > p.ele_pt_min)
              & (np.abs(part.eta) < p.eg_eta_max) & (rng.random(len(a)) < p.ele_hadron_fake))
    ci = np.nonzero(from_ele | from_conv)[0]
    hi = np.nonzero(hadron)[0]
    kind = np.concatenate([np.where(from_ele[ci], ELECTRON, CONVERSION), np.full(len(hi), HADRON)])
    src = np.concatenate([cl.seed[ci], hi])  # the particle whose track (and PF candidate) the electron has
    cluster = np.concatenate([ci, np.full(len(hi), -1)])
    n = len(src)
    e_evt = part.evt[src]
    conv, had = kind == CONVERSION, kind == HADRON
    had_e = part.e[hi] * (1 + 0.05 * rng.standard_normal(len(hi)))
    energy = np.concatenate([cl.energy[ci], had_e])
    trk_eta = part.eta[src] + 5e-4 * rng.standard_normal(n)
    trk_phi = wrap_phi(part.phi[src] + 5e-4 * rng.standard_normal(n))
    pt = energy / np.cosh(trk_eta)
    ae = np.abs(trk_eta)
    barrel_id = ae < 1.479
    sieie_mean = np.where(barrel_id, p.eg_sieie[0], p.eg_sieie[2])
    sieie = np.concatenate([cl.sieie[ci], sieie_mean[n - len(hi):] * (1 + rng.exponential(0.5, len(hi)))])
    r9 = np.concatenate([cl.r9[ci], rng.uniform(0.3, 0.9, len(hi))])
    hoe = np.concatenate([cl.hoe[ci], rng.exponential(0.15, len(hi))])
    deta_width = np.where(barrel_id, p.ele_deta_res[0], p.ele_deta_res[1]) * np.where(had, 4.0, 1.0)
    deta = deta_width * rng.standard_normal(n)
    x0 = _material(p, ae)
    q = np.where(conv, np.where(rng.random(n) < 0.5, -1, 1), np.sign(part.charge[src])).astype(np.int32)
    q = np.where(rng.random(n) < p.ele_charge_flip * x0, -q, q).astype(np.int32)
    # impact parameters of the track; a conversion leg starts at the conversion vertex
    conv_dxy = np.where(conv, rng.exponential(0.2, n) * np.where(rng.random(n) < 0.5, -1, 1), 0.0)
    dxy_cm, dz_cm = (part.dxy[src] + conv_dxy) / 10.0, part.dz[src] / 10.0
    dxy_err, dz_err = part.sig_dxy[src] / 10.0, part.sig_dz[src] / 10.0
    ip3d = np.hypot(dxy_cm, dz_cm)
    sip3d = ip3d / np.hypot(dxy_err, dz_err)
    lost = np.where(conv, 1 + rng.poisson(p.ele_lost_hits_conversion - 1, n),
                    rng.poisson(np.where(had, 0.1, p.ele_lost_hits_prompt), n)).astype(np.uint8)
    conv_veto = np.where(conv, rng.random(n) > p.ele_conv_vertex_eff, had | (rng.random(n) > 0.01))

    member = np.where(cluster >= 0, cluster, -2)
    iso = _isolation(e_evt, trk_eta, trk_phi, member, cl.member_of, pos_of[src], pf, _mini_cone(pt))
    ea = _effective_area(p, p.ele_ea, ae) * rho[e_evt]
    rel03 = (iso.ch03 + np.maximum(iso.ne03 - ea, 0.0)) / pt
    mini = (iso.ch_mini + np.maximum(iso.ne_mini - ea * (_mini_cone(pt) / 0.3) ** 2, 0.0)) / pt
    table = np.where(barrel_id[:, None, None], np.reshape(p.ele_id_barrel, (4, 8)), np.reshape(p.ele_id_endcap, (4, 8)))
    cut_based = _cut_based(table, sieie, np.abs(deta), hoe, energy, rho[e_evt], rel03, pt, lost, conv_veto)
    w = p.ele_mva_weights
    logit = (w[0] + w[1] * r9 + w[2] * sieie / sieie_mean + w[3] * np.minimum(hoe, 1.0) + w[4] * np.abs(deta) / deta_width.clip(1e-9)
             + w[5] * np.minimum(rel03, 2.0) + w[6] * lost + w[7] * ~conv_veto)
    mva = 2 / (1 + np.exp(-logit)) - 1
    g_idx = np.where(had, -1, part.gen_idx[src]).astype(np.int32)
    g_flav = np.where(conv & (part.gen_flav[src] == 1), 22, part.gen_flav[src])
    g_flav = np.where(g_idx >= 0, g_flav, 0).astype(np.uint8)
    keep = pt > p.ele_pt_min
    ele_cols = {
        "pt": pt, "eta": trk_eta, "phi": trk_phi, "mass": np.full(n, ELECTRON_MASS), "charge": q, "pdgId": -11 * q,
        "dxy": dxy_cm, "dxyErr": dxy_err, "dz": dz_cm, "dzErr": dz_err, "ip3d": ip3d, "sip3d": sip3d,
        "sieie": sieie, "r9": r9, "hoe": hoe, "deltaEtaSC": deta,
        "pfRelIso03_all": rel03, "pfRelIso03_chg": iso.ch03 / pt, "miniPFRelIso_all": mini, "miniPFRelIso_chg": iso.ch_mini / pt,
        "cutBased": cut_based, "mvaFall17V2Iso": mva, "mvaFall17V2Iso_WP80": mva > p.ele_mva_wp[0],
        "mvaFall17V2Iso_WP90": mva > p.ele_mva_wp[1], "lostHits": lost, "convVeto": conv_veto,
        "jetIdx": np.where(pos_of[src] >= 0, pf.jet[np.maximum(pos_of[src], 0)], -1).astype(np.int32),
        "genPartIdx": g_idx, "genPartFlav": g_flav,
    }
    e_order, e_counts, e_local = pt_order(e_evt, pt, keep, n_ev)

    # ---- photons' matching and IDs
    pi = np.nonzero(is_pho)[0]
    ele_of_cluster = np.full(len(cl.evt), -1, np.int64)
    ele_ok = keep & (cluster >= 0)
    ele_of_cluster[cluster[ele_ok]] = np.nonzero(ele_ok)[0]
    p_ele = ele_of_cluster[pi]
    has_ele = p_ele >= 0
    pe = np.maximum(p_ele, 0)
    prompt_ele = has_ele & (lost[pe] == 0) & conv_veto[pe]
    pae = np.abs(cl.eta[pi])
    eb, ee = pae < p.eg_barrel_eta_max, (pae > p.eg_endcap_eta_min) & (pae < p.eg_eta_max)
    ppt = pho_pt[pi]
    iso_p = _isolation(cl.evt[pi], cl.eta[pi], cl.phi[pi], pi, cl.member_of, pos_of[cl.seed[pi]], pf, 0.3)
    pea = _effective_area(p, p.pho_ea, pae) * rho[cl.evt[pi]]
    pho_rel03 = (iso_p.ch03 + np.maximum(iso_p.ne03 - pea, 0.0)) / ppt
    ph_corr = np.maximum(iso_p.ph03 - pea, 0.0)
    table = np.where(eb[:, None, None], np.reshape(p.pho_id_barrel, (3, 5)), np.reshape(p.pho_id_endcap, (3, 5)))
    passes = ((pho_hoe[pi][:, None] < table[..., 0]) & (cl.sieie[pi][:, None] < table[..., 1]) & (iso_p.ch03[:, None] < table[..., 2])
              & (ph_corr[:, None] < table[..., 3] + table[..., 4] * ppt[:, None]))
    pho_cut = np.where(eb | ee, np.cumprod(passes, axis=1).sum(axis=1), 0).astype(np.int32)
    pw = p.pho_mva_weights
    p_sieie_mean = np.where(pae < 1.479, p.eg_sieie[0], p.eg_sieie[2])
    p_logit = (pw[0] + pw[1] * cl.r9[pi] + pw[2] * cl.sieie[pi] / p_sieie_mean + pw[3] * np.minimum(pho_hoe[pi], 1.0)
               + pw[4] * np.minimum(pho_rel03, 2.0))
    p_mva = np.where(eb | ee, 2 / (1 + np.exp(-p_logit)) - 1, -1.0)
    seed = cl.seed[pi]
    pixel = np.where(cl.is_electron[pi], rng.random(len(pi)) < 0.95,
                     cl.converted[pi] & (rng.random(len(pi)) < p.pho_pixel_seed_conversion))
    pg_idx = part.gen_idx[seed].astype(np.int32)
    prompt = (pg_idx >= 0) & (part.gen_flav[seed] == 1)
    pg_flav = np.where(prompt, np.where(np.abs(part.pid[seed]) == 22, 1, 11), 0).astype(np.uint8)
    p_order, p_counts, p_local = pt_order(cl.evt[pi], ppt, np.ones(len(pi), bool), n_ev)
    pho_of_cluster = np.full(len(cl.evt), -1, np.int64)
    pho_of_cluster[pi] = p_local
    pho_cols = {
        "pt": ppt, "eta": cl.eta[pi], "phi": cl.phi[pi], "mass": np.zeros(len(pi)),
        "sieie": cl.sieie[pi], "r9": cl.r9[pi], "hoe": pho_hoe[pi],
        "pfRelIso03_all": pho_rel03, "pfRelIso03_chg": iso_p.ch03 / ppt,
        "cutBased": pho_cut, "mvaID": p_mva, "mvaID_WP80": p_mva > p.pho_mva_wp[0], "mvaID_WP90": p_mva > p.pho_mva_wp[1],
        "pixelSeed": pixel, "electronVeto": ~prompt_ele, "isScEtaEB": eb, "isScEtaEE": ee,
        "electronIdx": np.where(has_ele, e_local[pe], -1).astype(np.int32),
        "jetIdx": np.where(pos_of[seed] >= 0, pf.jet[np.maximum(pos_of[seed], 0)], -1).astype(np.int32),
        "genPartIdx": pg_idx, "genPartFlav": pg_flav,
    }
    ele_cols["photonIdx"] = np.where(cluster >= 0, pho_of_cluster[np.maximum(cluster, 0)], -1).astype(np.int32)
    return collection(ele_cols, e_order, e_counts), collection(pho_cols, p_order, p_counts)


@dataclass
class _Clusters:
    """ECAL clusters: seed particle, event, measured energy and position, shower shapes, H/E (cone 0.15 and the
    tower behind), what seeded
    them (an electron; a converted photon), the brem / conversion spread, and each particle's cluster (-1)."""

    seed: np.ndarray
    evt: np.ndarray
    energy: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    sieie: np.ndarray
    r9: np.ndarray
    hoe: np.ndarray
    hoe_tower: np.ndarray
    is_electron: np.ndarray
    converted: np.ndarray
    spread: np.ndarray
    member_of: np.ndarray


def _clusters(p: DetectorParams, rng: np.random.Generator, n_ev: int, part: Particles) -> _Clusters:
    a = np.abs(part.pid)
    ae = np.abs(part.eta)
    em = ((a == 22) | (a == 11)) & (ae < p.eg_eta_max + p.eg_cluster_dr) & (part.pt > 0.3)
    si = np.nonzero(em & (part.pt > p.eg_seed_pt_min) & (ae < p.eg_eta_max))[0]
    rank = part.pt[si] + 1e4 * (a[si] == 11)
    s_evt = part.evt[si]
    o, it = _kin.event_pairs(s_evt, np.bincount(s_evt, minlength=n_ev))
    dr = np.hypot(part.eta[si][o] - part.eta[si][it], delta_phi(part.phi[si][o], part.phi[si][it]))
    beaten = (dr < p.eg_cluster_dr) & ((rank[it] > rank[o]) | ((rank[it] == rank[o]) & (it < o)))
    seed = si[_kin.group_sum(o[beaten], np.ones(int(beaten.sum())), len(si)) == 0]
    nc = len(seed)
    c_evt = part.evt[seed]

    # members: every EM particle joins the nearest seed within eg_cluster_dr
    emi = np.nonzero(em)[0]
    o, it = _kin.event_pairs(c_evt, np.bincount(part.evt[emi], minlength=n_ev))
    m = emi[it]
    dr = np.hypot(part.eta[seed][o] - part.eta[m], delta_phi(part.phi[seed][o], part.phi[m]))
    inside = dr < p.eg_cluster_dr
    o, m, dr = o[inside], m[inside], dr[inside]
    first = np.lexsort((dr, m))
    first = first[np.r_[True, m[first][1:] != m[first][:-1]]] if len(first) else first
    o, m, dr = o[first], m[first], dr[first]
    member_of = np.full(len(part.evt), -1, np.int64)
    member_of[m] = o
    e_m = part.e[m]
    energy = _kin.group_sum(o, e_m, nc)
    core = _kin.group_sum(o, np.where(dr < p.eg_core_dr, e_m, 0.0), nc)
    deta = part.eta[m] - part.eta[seed][o]
    dphi = delta_phi(part.phi[m], part.phi[seed][o])
    w = np.maximum(energy, 1e-9)
    eta_c = part.eta[seed] + _kin.group_sum(o, e_m * deta, nc) / w
    phi_c = part.phi[seed] + _kin.group_sum(o, e_m * dphi, nc) / w
    var_eta = np.maximum(_kin.group_sum(o, e_m * deta**2, nc) / w - (eta_c - part.eta[seed]) ** 2, 0.0)

    # conversions and bremsstrahlung: material in front of the ECAL
    ae_c = np.abs(eta_c)
    x0 = _material(p, ae_c)
    is_ele = a[seed] == 11
    converted = (a[seed] == 22) & (rng.random(nc) < 1 - np.exp(-p.eg_conversion_scale * x0))
    # Bethe-Heitler: the surviving energy fraction z has -ln z ~ Gamma(t / ln 2)
    fbrem = 1 - np.exp(-rng.gamma(np.maximum(x0 / np.log(2), 1e-3)))
    spread = np.where(is_ele, fbrem, np.where(converted, 0.5 * rng.random(nc), 0.0))
    region_const = _region(p, ae_c, p.eg_const_barrel, p.eg_const_gap, p.eg_const_endcap)
    stoch = np.where(ae_c < p.eg_barrel_eta_max, p.ecal_stoch, p.eg_stoch_endcap)
    e_safe = np.maximum(energy, 1e-6)
    res = np.sqrt((stoch / np.sqrt(e_safe)) ** 2 + (p.ecal_noise / e_safe) ** 2 + region_const**2)
    # the energy regression puts the peak back at 1; the missed brem energy leaves a low-side tail
    loss = p.eg_brem_loss * spread
    resp = (1 + res * rng.standard_normal(nc)) * (1 - loss * rng.random(nc) ** 2) / (1 - 0.25 * loss)
    measured = energy * np.clip(resp, 0.05, None)
    barrel = ae_c < 1.479
    intrinsic = np.where(barrel, p.eg_sieie[0] + p.eg_sieie[1] * rng.standard_normal(nc),
                         p.eg_sieie[2] + p.eg_sieie[3] * rng.standard_normal(nc))
    sieie = np.sqrt(np.maximum(intrinsic, 0.002) ** 2 + var_eta)
    # brem photons and conversion legs open in phi by ~0.016 rad x 45 GeV / pT (3.8 T at 1.29 m): at low pT
    # they leave the 3x3 core
    core_frac = 1 - spread * np.clip(p.eg_core_spread_pt / np.maximum(energy / np.cosh(eta_c), 1e-3), 0, 0.8) - rng.exponential(0.02, nc)
    r9 = np.clip(core_frac * core / w, 0.05, 1.0)

    # H/E: hadrons' energy in the HCAL behind the cluster, plus the shower's own leakage, above a threshold
    h_all = p.eg_hcal_fraction * part.e
    hadronic = np.nonzero((a != 13) & (a != 11) & (a != 22) & (ae < p.eg_eta_max + 0.15) & (h_all > p.eg_hcal_threshold))[0]
    o, it = _kin.event_pairs(c_evt, np.bincount(part.evt[hadronic], minlength=n_ev))
    h = hadronic[it]
    dr_h = np.hypot(eta_c[o] - part.eta[h], delta_phi(phi_c[o], part.phi[h]))
    leak = measured * rng.exponential(p.eg_hoe_leak, nc)
    leak = np.where(leak > p.eg_hcal_threshold, leak, 0.0)
    hoe, hoe_tower = ((_kin.group_sum(o[near], h_all[h][near], nc) + leak) / np.maximum(measured, 1e-9)
                      for near in (dr_h < 0.15, dr_h < p.pho_hoe_tower_dr))
    eta_m = eta_c + p.eg_pos_res * rng.standard_normal(nc)
    phi_m = wrap_phi(phi_c + p.eg_pos_res * rng.standard_normal(nc))
    return _Clusters(seed, c_evt, measured, eta_m, phi_m, sieie, r9, hoe, hoe_tower, is_ele, converted, spread, member_of)


@dataclass
class _Iso:
    """PF isolation sums (GeV) per object: charged and neutral (hadrons + photons) in dR < 0.3 and in the
    mini cone, and the photons alone in 0.3."""

    ch03: np.ndarray
    ne03: np.ndarray
    ph03: np.ndarray
    ch_mini: np.ndarray
    ne_mini: np.ndarray


def _isolation(evt, eta, phi, cluster, member_of, self_pf, pf: PFCandidates, mini_cone) -> _Iso:
    """Isolation sums of objects around (eta, phi), without their own PF candidate and their cluster's
    (the footprint); neutrals below 0.5 GeV are left out, as for muons."""
    n = len(evt)
    oj, cj = _kin.event_pairs(evt, pf.counts)
    dr = np.hypot(eta[oj] - pf.eta[cj], delta_phi(phi[oj], pf.phi[cj]))
    own = (cj == self_pf[oj]) | (member_of[pf.particle[cj]] == cluster[oj])
    chg = pf.charged[cj]
    neu = ~chg & (pf.pt[cj] > 0.5)
    qpt = pf.pt[cj]

    def total(mask):
        return _kin.group_sum(oj[mask], qpt[mask], n)

    c03 = (dr < 0.3) & ~own
    cmini = (dr < np.broadcast_to(mini_cone, (n,))[oj]) & ~own
    return _Iso(total(c03 & chg), total(c03 & neu), total(c03 & neu & pf.photon[cj]), total(cmini & chg),
                total(cmini & neu))


def _mini_cone(pt):
    """The mini-isolation cone: 10 GeV / pT, between 0.05 and 0.2."""
    return 10.0 / np.clip(pt, 50.0, 200.0)


def _material(p: DetectorParams, abseta):
    """Tracker material in front of the ECAL, in radiation lengths."""
    return np.interp(abseta, p.eg_material_eta, p.eg_material_x0)


def _region(p: DetectorParams, abseta, barrel, gap, endcap):
    """A value per ECAL region: barrel, the barrel-endcap gap, endcap."""
    return np.where(abseta < p.eg_barrel_eta_max, barrel, np.where(abseta < p.eg_endcap_eta_min, gap, endcap))


def _effective_area(p: DetectorParams, areas, abseta):
    """The effective area of each object's |eta| bin (bins start at ``eg_ea_eta``)."""
    return np.asarray(areas)[np.clip(np.searchsorted(p.eg_ea_eta, abseta, side="right") - 1, 0, len(areas) - 1)]


def _cut_based(table, sieie, deta, hoe, energy, rho, reliso, pt, lost, conv_veto):
    """The tightest working point passed in order (0 none, then one per row of ``table``)."""
    sieie, deta, hoe, energy, rho, reliso, pt, lost = (x[:, None] for x in (sieie, deta, hoe, energy, rho, reliso, pt, lost))
    passes = ((sieie < table[..., 0]) & (deta < table[..., 1]) & (hoe < table[..., 2] + (table[..., 3] + table[..., 4] * rho) / energy)
              & (reliso < table[..., 5] + table[..., 6] / pt) & (lost <= table[..., 7]) & conv_veto[:, None])
    return np.cumprod(passes, axis=1).sum(axis=1).astype(np.int32)
