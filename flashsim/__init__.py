"""flashsim: end-to-end machine-learning fast simulation of LHC events, GEN -> NANOAOD-like RECO."""

from flashsim.events import from_branches, to_branches
from flashsim.io import NanoAODWriter, iterate_events, read_events, write_events

__version__ = "0.1.0"

__all__ = [
    "NanoAODWriter",
    "__version__",
    "from_branches",
    "iterate_events",
    "read_events",
    "to_branches",
    "write_events",
]
