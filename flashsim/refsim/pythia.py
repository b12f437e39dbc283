"""Pythia8 event generation for the reference simulation: process cards and batches.

Charged pions and kaons (and K_L) are allowed to decay inside the tracker+calorimeter
cylinder (as GEANT would), so in-flight-decay muons exist; B/C hadrons decay with
their lifetimes, so production vertices (mm) carry the displacement used in b-tagging.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from flashsim.errors import ConfigError, FlashsimError, InputError

PROCESSES: dict[str, list[str]] = {
    # W(->mu nu) + jet, as in Chen et al. 2021 (they select a jet pT > 30 GeV)
    "wjets": [
        "WeakBosonAndParton:qqbar2Wg = on",
        "WeakBosonAndParton:qg2Wq = on",
        "24:onMode = off",
        "24:onIfAny = 13",
    ],
    "ttbar": ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"],
    "dy": [
        "WeakSingleBoson:ffbar2gmZ = on",
        "23:onMode = off",
        "23:onIfAny = 13",
        "PhaseSpace:mHatMin = 50.",
    ],
    "minbias": ["SoftQCD:nonDiffractive = on"],
    # Z/gamma*(-> e e): electrons and their FSR photons
    "zee": [
        "WeakSingleBoson:ffbar2gmZ = on",
        "23:onMode = off",
        "23:onIfAny = 11",
        "PhaseSpace:mHatMin = 50.",
    ],
    # prompt photon + jet
    "gjets": ["PromptPhoton:all = on"],
}
DEFAULT_PTHAT_MIN: dict[str, float | None] = {"wjets": 20.0, "ttbar": None, "dy": None, "minbias": None, "zee": None,
                                              "gjets": 20.0}

_COMMON = [
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Next:numberShowEvent = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowInfo = 0",
    "Random:setSeed = on",
    # GEANT-like decays in flight of long-lived hadrons inside the detector volume
    "ParticleDecays:limitCylinder = on",
    "ParticleDecays:xyMax = 1290.",
    "ParticleDecays:zMax = 3000.",
    "211:mayDecay = on",
    "321:mayDecay = on",
    "130:mayDecay = on",
]

_CHARGE_CACHE: dict[int, float] = {}


@contextlib.contextmanager
def quiet_stdout(fd: int = 1):
    """Silence C++ chatter (Pythia warnings, the fastjet banner) on file descriptor ``fd`` (1, or 2 for stderr)."""
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        stream.flush()
        saved = os.dup(fd)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        try:
            stream.flush()
        except ValueError:
            pass
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def pythia_seed(*keys: int) -> int:
    """A Pythia seed (1..900000000) derived deterministically from integer keys."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] % 900_000_000) + 1


@dataclass
class FlatEvents:
    """A Pythia batch as flat numpy columns over all particles of all events."""

    counts: np.ndarray  # particles per event (record incl. system entry 0)
    pid: np.ndarray
    status: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    m: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray
    charge: np.ndarray
    weight: np.ndarray  # per event

    @property
    def n_events(self) -> int:
        return len(self.counts)


def charges(pid: np.ndarray, particle_data: Any = None) -> np.ndarray:
    """Electric charge for an array of PDG ids (cached lookups in Pythia's ParticleData)."""
    uniq, inv = np.unique(pid, return_inverse=True)
    vals = np.empty(len(uniq), dtype=np.float32)
    for i, u in enumerate(uniq.tolist()):
        c = _CHARGE_CACHE.get(u)
        if c is None:
            if particle_data is None:
                particle_data = _particle_data()
            c = _CHARGE_CACHE[u] = float(particle_data.charge(u))
        vals[i] = c
    return vals[inv]


def _particle_data() -> Any:
    """Pythia's particle data table, from an uninitialised (cheap, silent) Pythia instance."""
    import pythia8mc

    with quiet_stdout():
        return pythia8mc.Pythia("", False).particleData


def check_settings(settings: Sequence[tuple[str, str]], rejected: type[FlashsimError]) -> Any:
    """An uninitialised Pythia8 instance that took every (where, setting) pair; a rejected one raises ``rejected``
    naming where."""
    import pythia8mc

    with quiet_stdout():
        py = pythia8mc.Pythia("", False)
        for where, s in settings:
            if not py.readString(s):
                raise rejected(f"{where}: Pythia rejected the setting {s!r} (unknown key or bad value)")
    return py


def start_pythia(settings: Sequence[tuple[str, str]], rejected: type[FlashsimError], failed: str, hooks: Any = None) -> Any:
    """A Pythia8 instance given (where, setting) pairs and optional user ``hooks``: a rejected setting raises
    ``rejected`` naming where; a failed initialisation raises ``rejected`` with ``failed``."""
    with quiet_stdout():
        py = check_settings(settings, rejected)
        if hooks is not None:
            py.setUserHooksPtr(hooks)
        if not py.init():
            raise rejected(failed)
    return py


class Generator:
    """One Pythia8 instance configured for a process; ``batch(n)`` returns FlatEvents."""

    def __init__(self, process: str, sqrt_s: float = 13600.0, pthat_min: float | None = None, seed: int = 1):
        if process not in PROCESSES:
            raise ConfigError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
        self.process = process
        if pthat_min is None:
            pthat_min = DEFAULT_PTHAT_MIN[process]
        settings = _COMMON + [f"Beams:eCM = {float(sqrt_s)}", f"Random:seed = {int(seed)}"] + PROCESSES[process]
        if pthat_min is not None:
            settings.append(f"PhaseSpace:pTHatMin = {float(pthat_min)}")
        self._py = start_pythia([(f"process {process!r}", s) for s in settings], ConfigError,
                                f"Pythia initialisation failed for process {process!r} at sqrt(s) = {sqrt_s} GeV, "
                                f"pTHatMin = {pthat_min} GeV (check --sqrt-s and --pthat-min)")

    @classmethod
    def from_settings(cls, name: str, settings: Sequence[tuple[str, str]], failed: str, hooks: Any = None) -> Generator:
        """A generator for any Pythia setup: refsim's common settings (quiet, decays in flight), then ``settings``
        as (where, setting) pairs, and optional user ``hooks``; a rejected setting or a failed initialisation is an
        InputError."""
        gen = cls.__new__(cls)
        gen.process = name
        gen._py = start_pythia([("refsim", s) for s in _COMMON] + list(settings), InputError, failed, hooks)
        return gen

    @property
    def pythia(self) -> Any:
        """The underlying ``pythia8mc.Pythia`` (e.g. for ``info.atEndOfFile()``)."""
        return self._py

    def charges(self, pid: np.ndarray) -> np.ndarray:
        """Electric charge for an array of PDG ids (cached lookups in Pythia's ParticleData)."""
        return charges(pid, self._py.particleData)

    def batch(self, n: int) -> FlatEvents:
        """Generate ``n`` events (failed events are retried) and flatten them."""
        parts = []
        got = 0
        with quiet_stdout():
            while got < n:
                b = self._py.nextBatch(n - got)
                if len(b) == 0:
                    raise RuntimeError("Pythia produced no events")
                parts.append(b)
                got += len(b)
        return self.flatten(parts[0] if len(parts) == 1 else ak.concatenate(parts))

    def attempts(self, n: int) -> tuple[FlatEvents | None, np.ndarray]:
        """Make ``n`` attempts (one input event each, e.g. from an LHE file): the events that succeeded (None if
        none did), and a mask over the attempts of those that did."""
        with quiet_stdout():
            b = self._py.nextBatch(n, "none")
        ok = ~ak.to_numpy(ak.is_none(b, axis=0))
        return (self.flatten(b[ok]) if ok.any() else None), ok

    def flatten(self, b: ak.Array) -> FlatEvents:
        """Pythia's awkward batch (``nextBatch``) as flat columns."""
        prt = b["prt"]
        counts = ak.to_numpy(ak.num(prt)).astype(np.int64)
        f = ak.flatten(prt)

        def col(*path, fill=None):
            a = f[path]
            if fill is not None:
                a = ak.fill_none(a, fill)
            return ak.to_numpy(a)

        pid = col("id").astype(np.int32)
        w = ak.to_numpy(ak.firsts(b["info", "weights"]))
        return FlatEvents(
            counts=counts,
            pid=pid,
            status=col("status").astype(np.int32),
            m1=col("mother1").astype(np.int64),
            m2=col("mother2").astype(np.int64),
            d1=col("daughter1").astype(np.int64),
            d2=col("daughter2").astype(np.int64),
            px=col("p", "px"),
            py=col("p", "py"),
            pz=col("p", "pz"),
            e=col("p", "e"),
            m=col("m"),
            vx=col("vProd", "px", fill=0.0),
            vy=col("vProd", "py", fill=0.0),
            vz=col("vProd", "pz", fill=0.0),
            charge=self.charges(pid),
            weight=np.nan_to_num(np.asarray(w, dtype=np.float64), nan=1.0),
        )
