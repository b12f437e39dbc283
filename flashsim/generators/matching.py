"""MLM and FxFx jet matching of MadGraph LHE files, applied by Pythia8's ``JetMatchingMadgraph`` during the shower.

The run card in the LHE header says which: ``ickkw = 1`` is kT-MLM (partons separated by ``xqcut``), ``ickkw = 3`` is
FxFx (NLO; the matrix-element jet cut ``ptj`` is Pythia's qCutME). The jet settings are those of CMS's Pythia8 fragments
(kT jets, R = 1, |eta| < 5 for MLM and unlimited for FxFx, nQmatch = the run card's maxjetflavor). The merging scale
qCut is 1.5 x xqcut for MLM unless given, and must be given for FxFx; nJetMax is the highest multiplicity in the file
(MLM: light partons from the hard process; FxFx: the events' npNLO) unless given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flashsim.errors import ConfigError, InputError

from .lhe import LHEHeader, hard_partons, read_lhe

__all__ = ["MLM_QCUT_FACTOR", "Matching", "matching_hook", "matching_of"]

MLM_QCUT_FACTOR = 1.5  # default MLM qCut / xqcut


@dataclass(frozen=True)
class Matching:
    """The jet matching a file asks for, with the values Pythia gets and where each came from."""

    scheme: Literal["MLM", "FxFx"]
    q_cut: float
    n_jet_max: int
    n_qmatch: int
    q_cut_me: float = 0.0  # FxFx: the run card's ptj
    origin: str = ""  # where qCut and nJetMax came from, for the log line

    def settings(self) -> list[tuple[str, str]]:
        """Pythia settings as (where, setting) pairs."""
        fxfx = self.scheme == "FxFx"
        values = ["merge = on", "setMad = off", "scheme = 1", "jetAlgorithm = 2", "slowJetPower = 1", "coneRadius = 1.0",
                  f"etaJetMax = {999.0 if fxfx else 5.0}", "doShowerKt = off", f"qCut = {self.q_cut}",
                  f"nQmatch = {self.n_qmatch}", f"nJetMax = {self.n_jet_max}", f"doFxFx = {'on' if fxfx else 'off'}"]
        values += [f"qCutME = {self.q_cut_me}"] if fxfx else []
        # a veto ends Pythia::next() (one LHE event, one attempt) instead of showering the next LHE event in its place
        return [(f"{self.scheme} matching", s) for s in [*(f"JetMatching:{v}" for v in values), "Check:abortIfVeto = on"]]

    def describe(self) -> str:
        me = f", qCutME = {self.q_cut_me:g} GeV (ptj)" if self.scheme == "FxFx" else ""
        return (f"{self.scheme} jet matching: qCut = {self.q_cut:g} GeV, nJetMax = {self.n_jet_max}, "
                f"nQmatch = {self.n_qmatch}{me} ({self.origin})")


def _card_number(header: LHEHeader, path: Path, key: str) -> float | None:
    text = header.run_card.get(key)
    if text is None:
        return None
    try:
        return float(text.replace("d", "e").replace("D", "e"))
    except ValueError as exc:
        raise InputError(f"{path}: the run card's {key} = {text!r} is not a number") from exc


def matching_of(header: LHEHeader, path: str | os.PathLike[str], q_cut: float | None = None,
                n_jet_max: int | None = None) -> Matching | None:
    """The matching the header's run card asks for (None: none), checked for consistency; ``q_cut`` (GeV) and
    ``n_jet_max`` override the defaults (nJetMax is then read from the whole file)."""
    path = Path(path)
    ickkw = _card_number(header, path, "ickkw") or 0.0
    xqcut = _card_number(header, path, "xqcut") or 0.0
    if ickkw == 0:
        if xqcut > 0:
            raise InputError(f"{path}: inconsistent run card: xqcut = {xqcut:g} asks for MLM matching, ickkw = 0 for none")
        if q_cut is not None or n_jet_max is not None:
            raise ConfigError(f"{path}: --qcut/--njetmax given, but the run card asks for no jet matching (ickkw = 0)")
        return None
    if ickkw not in (1, 3):
        raise ConfigError(f"{path}: the run card's ickkw = {ickkw:g} is not a matching flashsim applies "
                          "(1: MLM, 3: FxFx with Pythia8's JetMatchingMadgraph)")
    scheme: Literal["MLM", "FxFx"] = "MLM" if ickkw == 1 else "FxFx"
    flavours = _card_number(header, path, "maxjetflavor")
    if flavours is None or not 1 <= flavours <= 5:
        raise InputError(f"{path}: {scheme} matching (ickkw = {ickkw:g}) needs the run card's maxjetflavor (1 to 5), "
                         f"found {header.run_card.get('maxjetflavor', 'none')}")
    ptj = _card_number(header, path, "ptj") or 0.0
    q_cut, origin = _merging_scale(path, scheme, xqcut, ptj, q_cut)
    if n_jet_max is None:
        n_jet_max = highest_multiplicity(path, scheme, int(flavours))
        origin += ", nJetMax from the file"
    elif n_jet_max < 0:
        raise ConfigError(f"{path}: nJetMax = {n_jet_max} must be >= 0")
    else:
        origin += ", nJetMax given"
    return Matching(scheme, float(q_cut), int(n_jet_max), int(flavours), ptj if scheme == "FxFx" else 0.0, origin)


def _merging_scale(path: Path, scheme: str, xqcut: float, ptj: float, q_cut: float | None) -> tuple[float, str]:
    """qCut (given, or MLM's default) checked against the run card's cut, and where it came from."""
    if scheme == "MLM":
        if xqcut <= 0:
            raise InputError(f"{path}: inconsistent run card: ickkw = 1 (MLM) with xqcut = {xqcut:g}; MLM needs xqcut > 0")
        floor, what = xqcut, f"the run card's xqcut = {xqcut:g} GeV"
        origin = "qCut given" if q_cut is not None else f"qCut = {MLM_QCUT_FACTOR:g} x xqcut"
        q_cut = MLM_QCUT_FACTOR * xqcut if q_cut is None else q_cut
    else:
        if xqcut > 0 or ptj <= 0:
            raise InputError(f"{path}: inconsistent run card: ickkw = 3 (FxFx) needs ptj > 0 and no xqcut; "
                             f"found ptj = {ptj:g}, xqcut = {xqcut:g}")
        if q_cut is None:
            raise ConfigError(f"{path}: FxFx matching (ickkw = 3): give the merging scale with --qcut (GeV, above the "
                              f"run card's ptj = {ptj:g} GeV)")
        floor, what, origin = ptj, f"the run card's ptj = {ptj:g} GeV", "qCut given"
    if q_cut <= floor:
        raise ConfigError(f"{path}: {scheme} matching: qCut = {q_cut:g} GeV must be above {what}")
    return float(q_cut), origin


def highest_multiplicity(path: Path, scheme: str, flavours: int) -> int:
    """The highest jet multiplicity among the file's events: light hard partons (MLM) or the npNLO attribute (FxFx)."""
    highest = 0
    for n, event in enumerate(read_lhe(path, LHEHeader()), 1):
        if scheme == "MLM":
            highest = max(highest, int(hard_partons(event.particles, flavours).sum()))
            continue
        value = event.attributes.get("npNLO")
        try:
            highest = max(highest, int(value))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: event {n}: FxFx matching needs each <event>'s npNLO attribute, "
                             f"found {value!r}") from exc
    return highest


def matching_hook() -> Any:
    """Pythia8's ``JetMatchingMadgraph`` user hook, counting the events it vetoes in ``vetoes``."""
    import pythia8mc

    class Counting(pythia8mc.JetMatchingMadgraph):
        def __init__(self) -> None:
            super().__init__()
            self.vetoes = 0

        def doVetoPartonLevelEarly(self, event: Any) -> bool:  # noqa: N802  (Pythia's name)
            veto = bool(pythia8mc.JetMatchingMadgraph.doVetoPartonLevelEarly(self, event))
            self.vetoes += veto
            return veto

    return Counting()
