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

    # --- MET --------------------------------------------------------------------------
    met_eta_max: float = 5.0

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
