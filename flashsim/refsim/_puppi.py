"""PUPPI-like pileup weights and the PUPPI MET of the reference detector.

As CMS's PUPPI: a candidate's local shape alpha = log sum_j (pT_j / dR_j)^2 over its neighbours within r0 (inside the
tracker: the charged candidates from the primary vertex; beyond it: every candidate but itself) is compared with the
event's alpha distribution of pileup (inside: the charged pileup the vertex fit rejects; beyond: every candidate);
a neutral's weight is the chi2 (1 dof) probability of its signed distance above the median. Charged candidates count
fully when associated with the primary vertex and not at all otherwise. Neighbours are summed on a grid of cells.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import erf

from . import _kin
from .params import DetectorParams

TRACKER_ETA = 2.5
ETA_EDGE = 5.0
PHOTON_PROTECTION_PT = 20.0  # CMS's PUPPI tune v15: neutral EM candidates above 20 GeV keep weight 1
NEUTRAL_PROTECTION_PT = 200.0  # and every neutral above 200 GeV
ALPHA_FLOOR = 1e-2  # sum (pT/dR)^2 in GeV^2 of a candidate with no neighbours (alpha = log of it)


class Candidates(NamedTuple):
    """Flat candidates of a batch: event, pT, eta, phi, px, py; charged from the PV, charged pileup, neutral EM."""

    evt: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    px: np.ndarray
    py: np.ndarray
    charged_pv: np.ndarray
    charged_pu: np.ndarray
    neutral_em: np.ndarray


class _Grid(NamedTuple):
    n_eta: int
    n_phi: int
    cell: float

    def cell_of(self, evt: np.ndarray, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        ie = np.clip(((eta + ETA_EDGE) / self.cell).astype(np.int64), 0, self.n_eta - 1)
        ip = np.clip(((phi + np.pi) / (2 * np.pi) * self.n_phi).astype(np.int64), 0, self.n_phi - 1)
        return (evt * self.n_eta + ie) * self.n_phi + ip

    def neighbour_sum(self, cells: np.ndarray, pt2: np.ndarray, n_ev: int, r0: float, dr_min: float) -> np.ndarray:
        """sum over cells within r0 of (pT^2 in the cell) / max(dR, dr_min)^2, for every cell of every event."""
        grid = np.bincount(cells, weights=pt2, minlength=n_ev * self.n_eta * self.n_phi)
        grid = grid.reshape(n_ev, self.n_eta, self.n_phi)
        phi_cell = 2 * np.pi / self.n_phi
        reach_eta = int(np.ceil(r0 / self.cell))
        reach_phi = int(np.ceil(r0 / phi_cell))
        padded = np.pad(grid, ((0, 0), (reach_eta, reach_eta), (0, 0)))
        out = np.zeros_like(grid)
        for de in range(-reach_eta, reach_eta + 1):
            for dp in range(-reach_phi, reach_phi + 1):
                dr = np.hypot(de * self.cell, dp * phi_cell)
                if dr > r0:
                    continue
                shifted = np.roll(padded[:, reach_eta + de:reach_eta + de + self.n_eta, :], -dp, axis=2)
                out += shifted / max(dr, dr_min) ** 2
        return out.reshape(-1)


def _median_rms(evt: np.ndarray, alpha: np.ndarray, n_ev: int) -> tuple[np.ndarray, np.ndarray]:
    """Per event: the median of alpha and its RMS about the median (NaN without values)."""
    order = np.lexsort((alpha, evt))
    counts = np.bincount(evt, minlength=n_ev)
    starts = _kin.starts_of(counts)
    has = counts > 0
    sorted_alpha = alpha[order]
    lo = starts + (counts - 1) // 2
    hi = starts + counts // 2
    median = np.full(n_ev, np.nan)
    median[has] = 0.5 * (sorted_alpha[lo[has]] + sorted_alpha[hi[has]])
    spread = _kin.group_sum(evt, (alpha - median[evt]) ** 2, n_ev)
    rms = np.sqrt(np.divide(spread, counts, out=np.full(n_ev, np.nan), where=has))
    return median, rms


def puppi_weights(c: Candidates, npv: np.ndarray, n_ev: int, p: DetectorParams) -> np.ndarray:
    """Each candidate's PUPPI weight (charged pileup 0, charged from the PV 1, neutrals from their local shape)."""
    grid = _Grid(int(round(2 * ETA_EDGE / (2 * p.puppi_dr_min))), max(int(round(np.pi / p.puppi_dr_min)), 1),
                 2 * p.puppi_dr_min)
    cells = grid.cell_of(c.evt, c.eta, c.phi)
    pt2 = c.pt * c.pt
    central = np.abs(c.eta) < TRACKER_ETA
    visible = ~c.charged_pu
    near_pv = grid.neighbour_sum(cells[c.charged_pv], pt2[c.charged_pv], n_ev, p.puppi_r0, p.puppi_dr_min)[cells]
    near_all = grid.neighbour_sum(cells[visible], pt2[visible], n_ev, p.puppi_r0, p.puppi_dr_min)[cells]
    near_all = np.where(visible, near_all - pt2 / p.puppi_dr_min**2, near_all)  # not itself
    alpha = np.log(np.maximum(np.where(central, near_pv, near_all), ALPHA_FLOOR))
    ref_central = c.charged_pu & central
    ref_forward = visible & ~central
    med_c, rms_c = _median_rms(c.evt[ref_central], alpha[ref_central], n_ev)
    med_f, rms_f = _median_rms(c.evt[ref_forward], alpha[ref_forward], n_ev)
    median = np.where(central, med_c[c.evt], med_f[c.evt])
    rms = np.where(central, rms_c[c.evt], rms_f[c.evt])
    above = np.clip(alpha - median, 0.0, None)
    chi2 = above * above / np.maximum(np.nan_to_num(rms * rms), 1e-12)  # any alpha above a spread-less median: 1
    weight = erf(np.sqrt(0.5 * chi2))
    weight = np.where(np.isnan(median), 1.0, weight)  # no pileup to compare with: nothing removed
    weight = np.where(weight < p.puppi_weight_min, 0.0, weight)
    a, b = np.where(central[:, None], np.array(p.puppi_neutral_pt_min), np.array(p.puppi_neutral_pt_min_forward)).T
    weight = np.where(weight * c.pt > a + b * npv[c.evt], weight, 0.0)
    weight = np.where((c.neutral_em & (c.pt > PHOTON_PROTECTION_PT)) | (c.pt > NEUTRAL_PROTECTION_PT), 1.0, weight)
    return np.where(c.charged_pu, 0.0, np.where(c.charged_pv, 1.0, weight))


def puppi_met(c: Candidates, npv: np.ndarray, n_ev: int, p: DetectorParams) -> dict[str, np.ndarray]:
    """PuppiMET pt, phi and sumEt: the negative weighted vector sum of the candidates within |eta| < met_eta_max."""
    w = puppi_weights(c, npv, n_ev, p) * (np.abs(c.eta) < p.met_eta_max)
    mex = -_kin.group_sum(c.evt, w * c.px, n_ev)
    mey = -_kin.group_sum(c.evt, w * c.py, n_ev)
    sumet = _kin.group_sum(c.evt, w * c.pt, n_ev)
    return {"pt": np.hypot(mex, mey).astype(np.float32), "phi": np.arctan2(mey, mex).astype(np.float32),
            "sumEt": sumet.astype(np.float32)}
