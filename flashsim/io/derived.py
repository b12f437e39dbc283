"""Branches some NanoAOD versions store and others let one compute, derived on read where a file lacks them.

DeepJet's CvB and CvL are ratios of its class probabilities (v7 stores B and C only); NanoAOD v15 dropped
``Jet_jetId``, which JME prescribes computing from the jet's energy fractions and multiplicities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np

__all__ = ["Derivation", "DERIVATIONS", "add_derived", "derivable", "derivable_branches"]


@dataclass(frozen=True)
class Derivation:
    """How to compute ``branch`` from ``needs`` (branch names), where a file has the latter only."""

    branch: str
    needs: tuple[str, ...]
    compute: Callable[..., ak.Array]
    how: str


def _ratio(numerator: ak.Array, denominator: ak.Array, valid: ak.Array) -> ak.Array:
    """A probability ratio (at most 1, which float32 inputs' rounding can pass) where ``valid`` and the
    denominator is positive, else NanoAOD's -1."""
    ok = valid & (denominator > 0)
    ratio = np.minimum(numerator / ak.where(ok, denominator, 1.0), 1.0)
    return ak.values_astype(ak.where(ok, ratio, -1.0), np.float32)


def _cvb(b: ak.Array, c: ak.Array) -> ak.Array:
    return _ratio(c, c + b, (b >= 0) & (c >= 0))


def _cvl(b: ak.Array, c: ak.Array) -> ak.Array:
    return _ratio(c, 1.0 - b, (b >= 0) & (c >= 0))


def _run3_jet_id(eta, nehef, neemef, chhef, chemef, muef, chmult, nemult) -> ak.Array:
    """JME's Run-3 AK4 PUPPI jet ID for NanoAOD v15: 2 (tight) + 4 (tight lepton veto), by |eta| region."""
    aeta = abs(eta)
    central = (nehef < 0.99) & (neemef < 0.9) & (chmult + nemult > 1) & (chhef > 0.01) & (chmult > 0)
    tight = ak.where(
        aeta <= 2.6, central,
        ak.where(aeta <= 2.7, (nehef < 0.9) & (neemef < 0.99),
                 ak.where(aeta <= 3.0, nehef < 0.99, (nemult >= 2) & (neemef < 0.4))))
    lepton_veto = tight & ((aeta > 2.7) | ((muef < 0.8) & (chemef < 0.8)))
    return ak.values_astype(2 * tight + 4 * lepton_veto, np.int32)


DERIVATIONS: tuple[Derivation, ...] = (
    Derivation("Jet_btagDeepFlavCvB", ("Jet_btagDeepFlavB", "Jet_btagDeepFlavC"), _cvb, "C / (C + B) of DeepJet's probabilities"),
    Derivation("Jet_btagDeepFlavCvL", ("Jet_btagDeepFlavB", "Jet_btagDeepFlavC"), _cvl, "C / (1 - B) of DeepJet's probabilities"),
    Derivation(
        "Jet_jetId",
        ("Jet_eta", "Jet_neHEF", "Jet_neEmEF", "Jet_chHEF", "Jet_chEmEF", "Jet_muEF", "Jet_chMultiplicity", "Jet_neMultiplicity"),
        _run3_jet_id, "JME's Run-3 jet ID from energy fractions and multiplicities",
    ),
)


def derivable(branch: str, available: set[str]) -> Derivation | None:
    """The derivation giving ``branch`` from ``available`` branches, if any."""
    return next((d for d in DERIVATIONS if d.branch == branch and set(d.needs) <= available), None)


def derivable_branches(available: set[str]) -> list[str]:
    """Branches missing from ``available`` that can be derived from it."""
    return [d.branch for d in DERIVATIONS if d.branch not in available and derivable(d.branch, available)]


def add_derived(branches: Mapping[str, ak.Array]) -> dict[str, ak.Array]:
    """``branches`` plus every derivable branch they lack."""
    out = dict(branches)
    for derivation in DERIVATIONS:
        if derivation.branch not in out and set(derivation.needs) <= set(out):
            out[derivation.branch] = derivation.compute(*(out[n] for n in derivation.needs))
    return out
