"""Every number of the parametric CMS-like detector, in one dataclass.

Units: GeV, mm for positions handed over by Pythia (converted to cm where NanoAOD
wants cm), radians.  Resolutions are written as ``sigma = a (+) b / sqrt(E) (+) c / E``
(added in quadrature).  Each smearing draws a Gaussian core plus, with probability
``*_tail_frac``, a ``*_tail_scale`` times wider Gaussian, so every response has
non-Gaussian tails the flows have to learn.

Load from TOML with :meth:`DetectorParams.from_toml` (a flat table of field = value,
optionally inside a ``[detector]`` table); unknown keys are an error so that typos do
not silently fall back to defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from flashsim.errors import ConfigError


@dataclass(frozen=True)
class DetectorParams:
    """Parameters of the particle-level parametric detector (defaults: CMS Run-3-like)."""

    # --- pileup ---------------------------------------------------------------------
    pu_profile_width: float = 0.25
    """Relative Gaussian width of the per-event nTrueInt around the requested mean."""
    pu_vertex_sigma_z: float = 50.0
    """Spread in z (mm) of pileup vertices relative to the primary vertex."""
    pu_pool_size: int = 5000
    """Number of min-bias events (generated per sample seed, then cached) from which pileup interactions are drawn."""
    pv_reco_eff: float = 0.7
    """Probability that a pileup vertex is reconstructed (PV_npvs)."""

    # --- tracker ----------------------------------------------------------------------
    trk_eta_max: float = 2.5
    trk_pt_min: float = 0.3
    trk_eff_plateau: float = 0.95
    trk_eff_pt_turnon: float = 0.4
    """Track efficiency = plateau * (1 - exp(-pt/turnon)), reduced for displaced tracks."""
    trk_rho_max: float = 600.0
    """Tracks produced beyond this transverse radius (mm) are not reconstructed."""
    trk_displaced_rho: float = 100.0
    """Scale (mm) of the efficiency loss with production radius: eff *= exp(-rho/scale)."""
    trk_pt_res_a: float = 0.006
    trk_pt_res_b: float = 1.5e-4
    """sigma(pT)/pT = a (+) b * pT, times (1 + endcap term) for |eta|>1.2."""
    trk_pt_res_endcap: float = 1.0
    trk_tail_frac: float = 0.04
    trk_tail_scale: float = 4.0
    trk_ip_res_a: float = 0.012
    """sigma(d0) = a (+) b / (pT sqrt(sin theta)), mm; a = 12 um, b = 30 um GeV."""
    trk_ip_res_b: float = 0.030
    trk_dz_res_a: float = 0.030
    trk_dz_res_b: float = 0.080
    trk_ip_tail_frac: float = 0.06
    trk_ip_tail_scale: float = 5.0
    chs_dz_cut: float = 1.0
    """Charged pileup with |dz(measured) - 0| below this (mm) is taken as primary (CHS leaks)."""

    # --- calorimeters -----------------------------------------------------------------
    calo_eta_max: float = 5.0
    hf_eta_min: float = 3.0
    ecal_stoch: float = 0.03
    ecal_noise: float = 0.15
    ecal_const: float = 0.005
    ecal_threshold: float = 0.5
    ecal_tail_frac: float = 0.05
    ecal_low_tail_mean: float = 0.06
    """Low-side ECAL tail: with prob tail_frac, response *= 1 - Exp(mean)."""
    hcal_stoch: float = 1.0
    hcal_const: float = 0.05
    hcal_threshold: float = 1.0
    hcal_response_inf: float = 0.96
    hcal_response_a: float = 0.25
    hcal_response_m: float = 0.35
    """Non-compensation: mean hadron response = inf * (1 - a * E**-m)."""
    hcal_tail_frac: float = 0.05
    hcal_tail_scale: float = 2.5
    hf_stoch: float = 1.8
    hf_const: float = 0.10
    hf_threshold: float = 3.0
    calo_pos_res: float = 0.02
    """Gaussian smearing of calorimeter-only deposits in eta and phi."""

    # --- muon system ------------------------------------------------------------------
    mu_eta_max: float = 2.4
    mu_pt_min: float = 3.0
    mu_p_min: float = 2.5
    """Muons need p above ~this (GeV) to reach the muon stations."""
    mu_eff_barrel: float = 0.965
    mu_eff_endcap: float = 0.945
    mu_eff_decay_rho: float = 300.0
    """Muons from in-flight decays beyond this radius (mm) are mostly lost (kinked tracks)."""
    mu_res_barrel: float = 0.011
    mu_res_overlap: float = 0.016
    mu_res_endcap: float = 0.022
    mu_res_b: float = 1.0e-4
    """sigma(pT)/pT = a(eta) (+) b * pT."""
    mu_tail_frac: float = 0.03
    mu_tail_scale: float = 3.5
    mu_charge_flip_b: float = 2.0e-6
    """Charge-flip probability = b * pT."""
    mu_medium_eff: float = 0.985
    mu_tight_eff: float = 0.98

    # --- jets -------------------------------------------------------------------------
    jet_r: float = 0.4
    jet_pt_min: float = 15.0
    genjet_pt_min: float = 10.0
    jet_match_dr: float = 0.2
    jec_offset_scale: float = 1.0
    """L1 offset: subtract jec_offset_scale * rho * area."""
    jec_eta_edges: tuple[float, ...] = (0.0, 1.3, 2.5, 3.0, 5.2)
    jec_pt_nodes: tuple[float, ...] = (10.0, 20.0, 30.0, 50.0, 80.0, 120.0, 200.0, 400.0, 1000.0)
    jec_response: tuple[float, ...] = (
        0.7552, 0.7552, 0.7698, 0.8539, 0.8860, 0.9146, 0.9397, 0.9483, 0.9483,
        0.8615, 0.8615, 0.8615, 0.9087, 0.9378, 0.9483, 0.9637, 0.9685, 0.9685,
        1.0648, 1.0648, 1.0648, 0.9965, 0.9803, 0.9636, 0.9636, 0.9636, 0.9636,
        1.0288, 1.0288, 1.0288, 1.0268, 0.9352, 0.9352, 0.9352, 0.9352, 0.9352,
    )
    """L2L3: pT(after L1) /= R(|eta| bin, pT), R linear in log pT between the nodes
    (row-major: one row of len(jec_pt_nodes) per |eta| bin).  Derived on this detector
    with :func:`flashsim.refsim.calibration.derive_jec`."""
    jet_confusion_const: float = 0.04
    """Per-jet relative smearing for PF confusion / calibration non-uniformity (a jet-level
    constant term; the particle-level terms alone give too good a resolution at high pT)."""
    jet_confusion_tail_frac: float = 0.03
    jet_confusion_tail_scale: float = 3.0
    jet_area_jitter: float = 0.02
    rho_grid: float = 0.55

    # --- flavour tagging (fixed formula on simulated observables) ----------------------
    tag_track_pt_min: float = 1.0
    tag_sip_vertex: float = 3.0
    """Tracks with signed IP significance above this form the pseudo secondary vertex."""
    tag_weights_b: tuple[float, ...] = (-4.45, 0.055, 0.012, 0.114, 3.09, -0.27, 0.31, 2.23)
    """b logit = w0 + w . (s1, s2, s3, min(nSV, 6), min(mSV, 5), min(mSV, 2), softMu), where
    s1..s3 are the three largest signed transverse IP significances of the jet's tracks,
    nSV / mSV the number / invariant mass of tracks with significance > tag_sip_vertex, and
    softMu = min(pTrel/2 GeV, 1.5) of a PF muon (pT > 5) in the jet.  The light logit is 0;
    the scores are the softmax probabilities (weights from a multinomial fit on this
    detector, sharpened by 1.5: a fixed formula, never a flavour label)."""
    tag_weights_c: tuple[float, ...] = (-3.13, -0.028, 0.028, 0.096, 2.30, -0.25, -0.35, -0.67)
    """c logit, same features."""
    tag_sip_clip: float = 25.0

    # --- electrons and photons (refsim/_egamma.py) ---------------------------------------
    # Sources: CMS, "Electron and photon performance ... in Run 2", JINST 16 (2021) P05014 (EGM-17-001);
    # CMS ECAL, JINST 8 (2013) P09009; CMS tracker, JINST 9 (2014) P10009 (material budget); the EGM POG's
    # Fall17 V2 cut-based electron and photon IDs and effective areas (twikis CutBasedElectronIdentificationRun2,
    # CutBasedPhotonIdentificationRun2), values rounded.
    egamma: bool = True
    """Reconstruct Electron and Photon (off: the detector without them, e.g. to time them)."""
    eg_eta_max: float = 2.5
    eg_barrel_eta_max: float = 1.4442
    eg_endcap_eta_min: float = 1.566
    """ECAL barrel |eta| < 1.4442, endcap 1.566 < |eta| < 2.5; the gap between is the barrel-endcap crack."""
    eg_seed_pt_min: float = 3.0
    """EM particles (photons, electrons) above this pT seed a cluster; the others only join one."""
    eg_cluster_dr: float = 0.05
    """EM particles within this dR of a harder seed join its cluster (a pi0's two photons merge above ~5 GeV);
    electron seeds rank above photon seeds, so an electron collects its FSR and brem photons."""
    eg_core_dr: float = 0.026
    """dR of the 3x3-crystal core (1.5 barrel crystals of 0.0174) that R9 = E(3x3) / E(cluster) counts."""
    eg_material_eta: tuple[float, ...] = (0.0, 0.5, 1.0, 1.4, 1.6, 2.0, 2.5)
    eg_material_x0: tuple[float, ...] = (0.40, 0.50, 0.90, 1.80, 1.60, 1.30, 0.90)
    """Tracker material in front of the ECAL (radiation lengths) vs |eta|, linear between nodes: ~0.4 X0 at
    eta = 0, ~1.8 X0 near |eta| = 1.4-1.5 (CMS tracker, JINST 9 (2014) P10009, Fig. 1)."""
    eg_conversion_scale: float = 0.78
    """P(photon converts) = 1 - exp(-scale * X/X0) (7/9 per radiation length)."""
    eg_const_barrel: float = 0.010
    eg_const_endcap: float = 0.022
    eg_const_gap: float = 0.05
    eg_stoch_endcap: float = 0.05
    """e/gamma energy resolution: barrel ecal_stoch (+) ecal_noise/E (+) eg_const_barrel, endcap eg_stoch_endcap
    (+) ecal_noise/E (+) eg_const_endcap; the constants include intercalibration and material (Z->ee: ~2 %
    barrel, 2-5 % endcap, EGM-17-001)."""
    eg_brem_loss: float = 0.08
    """Fraction of the bremsstrahlung energy the supercluster misses, times U(0,1): the low-side tail."""
    eg_core_spread_pt: float = 6.0
    """R9 = core fraction * E(core) / E(cluster); the core fraction loses spread * min(this / pT, 0.8), spread
    being the brem fraction of an electron or U(0, 0.5) for a conversion (the pair opens in phi)."""
    eg_pos_res: float = 0.002
    """Resolution of the supercluster position in eta and phi (photons)."""
    ele_pt_min: float = 5.0
    ele_eff_barrel: float = 0.97
    ele_eff_endcap: float = 0.94
    ele_eff_gap: float = 0.85
    ele_eff_pt_turnon: float = 5.0
    """Electron reconstruction (GSF track + supercluster) efficiency = plateau(region) * (1 - exp(-(pT - 2)/turnon));
    > 95 % above 20 GeV in the barrel (EGM-17-001, Fig. 6)."""
    ele_charge_flip: float = 0.003
    """Charge misassignment probability per radiation length of material (0.1 % barrel to ~0.5 % at |eta| ~ 1.5)."""
    ele_conversion_as_electron: float = 0.4
    """Probability that a converted photon is also reconstructed as an electron (one leg's GSF track)."""
    ele_hadron_fake: float = 0.002
    """Probability that a tracked charged hadron above ele_pt_min is reconstructed as an electron (pi+- with
    an overlapping pi0, or an early shower)."""
    ele_lost_hits_prompt: float = 0.05
    """Mean number of missing inner hits of a prompt electron track (Poisson)."""
    ele_lost_hits_conversion: float = 1.5
    """Mean number of missing inner hits of a conversion leg (1 + Poisson(mean - 1))."""
    ele_conv_vertex_eff: float = 0.75
    """Probability that a conversion leg has a fitted conversion vertex (fails convVeto); prompt: 1 %."""
    ele_deta_res: tuple[float, ...] = (0.0012, 0.0025)
    """Width of deltaEtaSC (track vs supercluster eta), barrel and endcap; hadron fakes are 4x wider."""
    eg_sieie: tuple[float, ...] = (0.0090, 0.0006, 0.0250, 0.0020)
    """Intrinsic sigma_ieta_ieta (mean, width) of a single EM shower, barrel then endcap; the eta spread of the
    cluster's particles adds in quadrature (merged pi0s, pileup)."""
    eg_hcal_fraction: float = 0.5
    eg_hcal_threshold: float = 1.0
    """H/E: a hadron within dR < 0.15 of the cluster puts eg_hcal_fraction of its energy in the HCAL behind it
    (the rest showers in the ECAL's ~1 interaction length), counted above eg_hcal_threshold GeV (tower noise)."""
    eg_hoe_leak: float = 0.004
    """Mean (exponential) longitudinal leakage of an EM shower into the HCAL, as a fraction of its energy."""
    ele_ea: tuple[float, ...] = (0.1440, 0.1562, 0.1032, 0.0859, 0.1116, 0.1321, 0.1654)
    pho_ea: tuple[float, ...] = (0.1893, 0.2115, 0.1511, 0.1170, 0.1246, 0.1329, 0.1690)
    eg_ea_eta: tuple[float, ...] = (0.0, 1.0, 1.479, 2.0, 2.2, 2.3, 2.4)
    """Effective areas for the rho correction of the neutral isolation in cone 0.3, by |eta| bin starting at
    eg_ea_eta (Fall17 V2: electrons; photons neutral hadrons + photons + charged)."""
    ele_id_barrel: tuple[float, ...] = (
        0.0126, 0.00463, 0.050, 1.16, 0.0324, 0.198, 0.506, 2,
        0.0112, 0.00377, 0.050, 1.16, 0.0324, 0.112, 0.506, 1,
        0.0106, 0.00320, 0.046, 1.16, 0.0324, 0.0478, 0.506, 1,
        0.0104, 0.00255, 0.026, 1.15, 0.0324, 0.0287, 0.506, 1,
    )
    ele_id_endcap: tuple[float, ...] = (
        0.0457, 0.00814, 0.050, 2.54, 0.183, 0.203, 0.963, 3,
        0.0425, 0.00674, 0.0441, 2.54, 0.183, 0.108, 0.963, 1,
        0.0387, 0.00632, 0.0275, 2.52, 0.183, 0.0658, 0.963, 1,
        0.0353, 0.00501, 0.0188, 2.06, 0.183, 0.0571, 0.963, 1,
    )
    """Cut-based electron ID (Fall17 V2: veto, loose, medium, tight), one row per working point: sieie,
    |deltaEtaSC| (for dEtaInSeed), H/E < h0 + hE / E + hrho rho / E, relIso03 < c0 + c1 / pT, max lost hits;
    all need convVeto.  cutBased is the tightest passed (0-4); the dPhiIn and 1/E-1/p cuts are left out."""
    pho_id_barrel: tuple[float, ...] = (
        0.04596, 0.0106, 1.694, 2.876, 0.004017,
        0.02197, 0.01015, 1.141, 2.080, 0.004017,
        0.02148, 0.00996, 0.650, 2.044, 0.004017,
    )
    pho_id_endcap: tuple[float, ...] = (
        0.0590, 0.0272, 2.089, 4.162, 0.0037,
        0.0326, 0.0272, 1.051, 3.867, 0.0037,
        0.0321, 0.0271, 0.517, 3.032, 0.0037,
    )
    """Cut-based photon ID (Fall17 V2: loose, medium, tight): H/E, sieie, charged iso (GeV), photon iso
    (GeV, rho-corrected) < c0 + c1 pT; the neutral-hadron cut is left out.  cutBased is the tightest passed (0-3)."""
    ele_mva_weights: tuple[float, ...] = (5.0, 3.0, -4.0, -15.0, -0.8, -12.0, -1.5, -3.0)
    """Toy electron MVA: logit = w0 + w . (r9, sieie / (barrel or endcap intrinsic mean), min(H/E, 1),
    |deltaEtaSC| / width, min(relIso03, 2), lostHits, not convVeto); score = 2 sigmoid(logit) - 1 in [-1, 1]."""
    ele_mva_wp: tuple[float, ...] = (0.50, 0.12)
    """Score thresholds of WP80 and WP90: 80 % and 90 % of prompt Z->ee electrons above 20 GeV pass (refsim zee, <nPU> 35)."""
    pho_mva_weights: tuple[float, ...] = (5.0, 3.0, -4.0, -15.0, -10.0)
    """Toy photon MVA: logit = w0 + w . (r9, sieie / intrinsic mean, min(H/E, 1), min(relIso03, 2))."""
    pho_mva_wp: tuple[float, ...] = (0.88, 0.77)
    """WP80 and WP90 thresholds: 80 % and 90 % of prompt photons above 20 GeV pass (refsim gjets, <nPU> 35)."""
    pho_pt_min: float = 10.0
    pho_eff: float = 0.98
    pho_hoe_max: float = 0.5
    """Photons: pT > pho_pt_min, reconstruction efficiency pho_eff, cone H/E < pho_hoe_max (gedPhoton preselection)."""
    pho_hoe_tower_dr: float = 0.05
    """Photon_hoe counts the HCAL tower behind the seed (hadTowOverEm; 0.087 x 0.087, about dR < 0.05), as the
    Run-2 photon ID does; Electron_hoe the cone dR < 0.15 (hadronicOverEm), as the Fall17 V2 electron ID does."""
    pho_pixel_seed_conversion: float = 0.3
    """Probability that a converted photon has a pixel seed (early conversions); electrons have one at 95 %."""

    # --- MET --------------------------------------------------------------------------
    met_eta_max: float = 5.0
    puppi_r0: float = 0.4
    """PUPPI's cone: a candidate's local shape alpha = log sum (pT_j / dR_j)^2 over its neighbours within r0."""
    puppi_dr_min: float = 0.05
    """Smallest neighbour distance in alpha (neighbours are summed on a grid of cells of this half-size)."""
    puppi_weight_min: float = 0.01
    """Weights below this are set to 0."""
    puppi_neutral_pt_min: tuple[float, float] = (0.2, 0.015)
    """A weighted neutral is kept when w pT > a + b nPV (central |eta| < 2.5) ..."""
    puppi_neutral_pt_min_forward: tuple[float, float] = (1.0, 0.06)
    """... and in the forward region without tracks."""

    # --- execution ----------------------------------------------------------------------
    detector_pass_events: int = 50
    """The detector runs over a batch in passes of this many events (bounds memory)."""

    # ----------------------------------------------------------------------------------
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Free-form notes carried along (ignored by the simulation)."""

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "DetectorParams":
        """Read parameters from a TOML file (top level or ``[detector]`` table); a bad file or an
        unknown field is a :class:`~flashsim.errors.ConfigError` naming the file."""
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not a valid TOML detector card ({exc})") from exc
        if "detector" in data and isinstance(data["detector"], dict):
            data = data["detector"]
        data.update(overrides)
        try:
            return cls.from_dict(data)
        except KeyError as exc:
            raise ConfigError(f"{path}: {exc.args[0]}") from exc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectorParams":
        """Build from a flat mapping; unknown keys raise ``KeyError``."""
        return cls().replace(**data)

    def replace(self, **changes: Any) -> "DetectorParams":
        """A copy with some fields changed (lists become tuples)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            hints = [f"{k!r}" + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(k, names, 1)) for k in unknown]
            raise KeyError(f"unknown DetectorParams field(s): {', '.join(hints)}")
        clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of all fields (tuples as lists), e.g. to write a TOML card."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def to_toml(self, path: str | Path) -> Path:
        """Write all fields as a ``[detector]`` TOML card (readable by :meth:`from_toml`)."""

        def fmt(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(fmt(x) for x in v) + "]"
            if isinstance(v, str):
                return json.dumps(v)
            return repr(v)

        lines = ["[detector]"]
        for name, value in self.to_dict().items():
            if name != "extra":
                lines.append(f"{name} = {fmt(value)}")
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path

    def digest(self) -> str:
        """Short stable hash of the physics parameters (for cache keys and provenance)."""
        d = self.to_dict()
        d.pop("extra", None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
