"""Branches some NanoAOD versions store and others let one compute, derived on read where a file lacks them.

DeepJet's CvB and CvL are ratios of its class probabilities (v7 stores B and C only); NanoAOD v15 dropped
``Jet_jetId``, which JME prescribes computing from the jet's energy fractions and multiplicities; Run-3 NanoAOD
stores no ``Photon_mass`` (photons are massless; coffea fills 0 as well), which output in those versions leaves out;
NanoAOD v7 stores the photon's cut-based ID as a bitmap of its nested levels, written back as such.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import awkward as ak
import numpy as np

__all__ = ["Derivation", "DERIVATIONS", "ON_WRITE", "add_derived", "derivable", "derivable_branches", "left_out_on_write"]


@dataclass(frozen=True)
class Derivation:
    """How to compute ``branch`` from ``needs`` (branch names), where a file has the latter only."""

    branch: str
    needs: tuple[str, ...]
    compute: Callable[..., ak.Array]
    how: str
    implied: bool = False  # a version without the branch is written without it: its value follows from what is written


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


def _massless(pt: ak.Array) -> ak.Array:
    return ak.values_astype(pt * 0, np.float32)


def _level_of_bitmap(bitmap: ak.Array) -> ak.Array:
    """The highest of the nested levels (1 loose, 2 medium, 3 tight) a bitmap 2^(0:loose, 1:medium, 2:tight) sets."""
    return ak.values_astype(ak.where(bitmap & 4 > 0, 3, ak.where(bitmap & 2 > 0, 2, ak.where(bitmap & 1 > 0, 1, 0))), np.int32)


def _bitmap_of_level(level: ak.Array) -> ak.Array:
    """The nested levels' bitmap: a level passes every lower one."""
    return ak.values_astype((1 << ak.values_astype(level, np.int64)) - 1, np.int32)


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
    Derivation("Photon_mass", ("Photon_pt",), _massless, "0: photons are massless", implied=True),
    Derivation("Photon_cutBased", ("Photon_cutBasedBitmap",), _level_of_bitmap, "the highest level of v7's Fall17V2 bitmap",
               implied=True),
)
# branches a version stores in place of flashsim's, derived when writing that version
ON_WRITE: tuple[Derivation, ...] = (
    Derivation("Photon_cutBasedBitmap", ("Photon_cutBased",), _bitmap_of_level, "v7's bitmap of the nested cut-based levels"),
)


def left_out_on_write(branch: str, stored: Collection[str]) -> bool:
    """Whether a version storing ``stored`` (flashsim's names) but not ``branch`` is written without it: its value
    follows from what that version stores."""
    return any(d.branch == branch and d.implied and set(d.needs).issubset(stored) for d in DERIVATIONS)


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
