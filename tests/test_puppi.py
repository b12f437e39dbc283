"""refsim's PUPPI-like weights on hand-built candidates, and PuppiMET in refsim events."""

from __future__ import annotations

import numpy as np
import pytest

from flashsim.refsim import DetectorParams
from flashsim.refsim._puppi import Candidates, puppi_met, puppi_weights

PARAMS = DetectorParams()


def _candidates(rows):
    """rows: (event, pt, eta, phi, kind) with kind in pv (charged from the PV), pu (charged pileup), n (neutral
    hadron), g (neutral EM)."""
    evt, pt, eta, phi, kind = (np.array(c) for c in zip(*rows))
    return Candidates(evt.astype(np.int64), pt.astype(float), eta.astype(float), phi.astype(float),
                      (pt * np.cos(phi)).astype(float), (pt * np.sin(phi)).astype(float),
                      kind == "pv", kind == "pu", kind == "g")


def _pileup_background(event, rng, n=60, eta_max=2.4):
    """Soft charged pileup spread over the tracker (the reference for alpha's median and RMS)."""
    return [(event, float(rng.uniform(0.5, 2.0)), float(rng.uniform(-eta_max, eta_max)),
             float(rng.uniform(-np.pi, np.pi)), "pu") for _ in range(n)]


def test_charged_by_vertex_neutrals_by_their_neighbourhood():
    rng = np.random.default_rng(1)
    jet = [(0, 40.0, 0.50, 1.00, "pv"), (0, 25.0, 0.55, 1.05, "pv"), (0, 10.0, 0.45, 0.95, "pv")]
    rows = jet + _pileup_background(0, rng) + [
        (0, 8.0, 0.52, 1.02, "n"),     # a neutral hadron inside a hard jet from the PV
        (0, 1.5, -1.80, -2.00, "n"),   # a soft neutral far from any PV track: pileup-like
    ]
    c = _candidates(rows)
    w = puppi_weights(c, np.array([30]), 1, PARAMS)
    assert np.all(w[:3] == 1.0)
    assert np.all(w[3:-2] == 0.0)
    assert w[-2] > 0.99
    assert w[-1] == 0.0


def test_photon_protection_and_no_pileup():
    rng = np.random.default_rng(2)
    rows = _pileup_background(0, rng) + [(0, 35.0, 0.1, 0.2, "g"), (0, 35.0, 0.1, -2.0, "n")]
    rows += [(1, 3.0, 0.3, 0.0, "n"), (1, 20.0, 1.0, 2.0, "pv")]  # event 1: no pileup to compare with
    w = puppi_weights(_candidates(rows), np.array([30, 1]), 2, PARAMS)
    assert w[-4] == 1.0  # an isolated photon above 20 GeV keeps its weight (CMS PUPPI tune v15)
    assert w[-3] == 0.0  # an isolated neutral hadron of the same pT does not
    assert np.all(w[-2:] == 1.0)


def test_puppi_met_is_the_weighted_recoil():
    rows = [(0, 30.0, 0.0, 0.0, "pv"), (0, 10.0, 1.0, np.pi / 2, "pv"), (0, 5.0, 0.0, 2.0, "pu")]
    met = puppi_met(_candidates(rows), np.array([1]), 1, PARAMS)
    assert met["pt"][0] == pytest.approx(np.hypot(30.0, 10.0), rel=1e-6)
    assert met["phi"][0] == pytest.approx(np.arctan2(-10.0, -30.0), rel=1e-6)
    assert met["sumEt"][0] == pytest.approx(40.0, rel=1e-6)
    assert met["pt"].dtype == met["phi"].dtype == met["sumEt"].dtype == np.float32
