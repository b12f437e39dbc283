"""Reference simulation: Pythia8 GEN + a particle-level parametric CMS-like detector.

The stand-in for GEANT4 full simulation on which flows are trained::

    from flashsim.refsim import generate
    for chunk in generate("wjets", 10_000, pileup=35, seed=1):
        chunk.Jet.pt, chunk.Muon.pfRelIso04_all, chunk.GenJet.hadronFlavour, ...
"""

from .core import DEFAULT_SQRT_S, generate
from .detector import simulate_detector
from .gen import build_gen
from .params import DetectorParams
from .pileup import PileupPool, draw_pileup
from .pythia import PROCESSES, Generator

__all__ = [
    "DEFAULT_SQRT_S",
    "DetectorParams",
    "Generator",
    "PROCESSES",
    "PileupPool",
    "build_gen",
    "draw_pileup",
    "generate",
    "simulate_detector",
]
