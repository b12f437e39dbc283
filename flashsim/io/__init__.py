"""Readers of GEN/RECO NanoAOD input and writers of NANOAOD-like output (ROOT TTree or Parquet)."""

from flashsim.io.reader import (
    EventSource,
    iterate_events,
    open_source,
    read_events,
    resolve_inputs,
)
from flashsim.io.writer import NanoAODWriter, format_of, write_events

__all__ = [
    "EventSource",
    "NanoAODWriter",
    "format_of",
    "iterate_events",
    "open_source",
    "read_events",
    "resolve_inputs",
    "write_events",
]
