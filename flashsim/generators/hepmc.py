"""HepMC3 ASCII input (plain or gzipped), read with pyhepmc, as Pythia-like flat particle records.

Particles are renumbered as Pythia orders its record (entry 0 the system, then particles without a production
vertex, then the outgoing particles of each vertex together), so that daughters form one index range; HepMC
status codes become Pythia-like ones (1 final, 2 decayed -> -91, 4 beam -> -12, others negated) so that
refsim's GEN builder reads them as it reads Pythia's record.
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from flashsim.errors import InputError
from flashsim.refsim import _kin
from flashsim.refsim.pythia import FlatEvents, charges, quiet_stdout

__all__ = ["HepMCBatch", "HepMCBlocks", "batch_of", "count_events", "event_record", "hepmc_events", "read_hepmc"]

FOOTER = b"HepMC::Asciiv3-END_EVENT_LISTING"
_STATUS = {1: 1, 2: -91, 3: -21, 4: -12}  # HepMC -> Pythia-like (3: documentation of the hard process)


@dataclass
class HepMCBatch:
    """Events of a HepMC file as a FlatEvents batch and their event numbers."""

    events: FlatEvents
    numbers: np.ndarray  # uint64


class _Tail(io.RawIOBase):
    """A binary reader that remembers the last bytes read (to find the end-of-listing footer)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.tail = (self.tail + data)[-256:]
        return len(data)


def _open(path: Path) -> IO[bytes]:
    """The file as bytes, decompressed if gzipped; its header must be that of HepMC3 ASCII."""
    raw = cast(IO[bytes], gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb"))
    try:
        header = raw.read(256)
    except (OSError, EOFError, zlib.error) as exc:
        raw.close()
        raise InputError(f"{path}: cannot read as gzip ({exc})") from exc
    if b"HepMC::Asciiv3" not in header:
        raw.close()
        raise InputError(f"{path}: not a HepMC3 ASCII file (no 'HepMC::Asciiv3' header)")
    raw.seek(0)
    return raw


def count_events(path: str | os.PathLike[str]) -> int:
    """The number of event lines ('E ...') in the file (a fast scan, no parsing); not HepMC3 ASCII is an InputError."""
    n, last = 0, b"\n"
    try:
        with _open(Path(path)) as handle:
            while block := handle.read(1 << 22):
                n += (last + block).count(b"\nE ")
                last = block[-1:]
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip ({exc})") from exc
    return n


def hepmc_events(path: str | os.PathLike[str], text: bytes | None = None, first: int = 0) -> Iterator[Any]:
    """The file's events as pyhepmc GenEvents, in order (or those of ``text``, a block of the file whose first event
    is the file's ``first``, see :class:`HepMCBlocks`); a truncated or unreadable file or no events are an InputError."""
    import pyhepmc
    from pyhepmc.io import ReaderAscii, pyiostream

    path = Path(path)
    with _open(path) if text is None else io.BytesIO(text) as raw:
        tail = _Tail(raw)
        reader = ReaderAscii(pyiostream(io.BufferedReader(tail)))
        n, number = first, "none"
        while True:
            event = pyhepmc.GenEvent()
            try:
                with quiet_stdout(1), quiet_stdout(2):  # HepMC3 parse messages: the InputError below says it in one line
                    ok = reader.read_event(event)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"{path}: truncated or corrupt after event {n} ({exc})") from exc
            if not ok:
                raise InputError(f"{path}: event {n + 1} in the file (after event number {number}) cannot be parsed: "
                                 "truncated or not HepMC3")
            if reader.failed() and len(event.particles) == 0:  # end of the file
                if FOOTER not in tail.tail:
                    raise InputError(f"{path}: truncated after event {n} (no '{FOOTER.decode()}' line at the end)")
                break
            n += 1
            number = str(event.event_number)
            yield event
        if n == first:
            raise InputError(f"{path}: holds no events")


class HepMCBlocks:
    """A HepMC3 file cut into blocks of events that pyhepmc's reader parses alone (the file's header, the events'
    lines, an end-of-listing line): the events before a block are skipped by finding their 'E' lines, unparsed,
    so that each of several processes parses only its own blocks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.raw = _open(self.path)
        self.data = b""
        self.index = 0  # the event that starts at self.pos
        self.pos = self._next_event(0)
        if self.pos < 0:
            raise InputError(f"{self.path}: holds no events")
        self.header = self.data[: self.pos]

    def close(self) -> None:
        self.raw.close()

    def _next_event(self, start: int) -> int:
        """Offset in ``data`` of the first event line at or after ``start``, reading on as needed; -1 at the end."""
        while (found := self.data.find(b"\nE ", max(start - 1, 0))) < 0:
            start = len(self.data)
            try:
                more = self.raw.read(1 << 22)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"{self.path}: truncated or corrupt after event {self.index} ({exc})") from exc
            if not more:
                return -1
            self.data += more
        return found + 1

    def _drop_read(self) -> None:
        """Forget the bytes before the current event once they are many."""
        if self.pos > 1 << 22:
            self.data, self.pos = self.data[self.pos:], 0

    def block(self, start: int, stop: int) -> bytes:
        """The text of events [start, stop) (0-based, ``start`` not before the events already passed), ending with
        the file's own end when the block reaches it."""
        if start < self.index:
            raise ValueError(f"event {start} is behind the reader (at event {self.index})")
        while self.index < start:
            self.pos = self._next_event(self.pos + 1)
            if self.pos < 0:
                raise InputError(f"{self.path}: holds {self.index + 1} events, fewer than counted")
            self.index += 1
            self._drop_read()
        end = self.pos
        for _ in range(stop - start):
            end = self._next_event(end + 1)
            if end < 0:
                text, self.pos, self.index = self.data[self.pos:], len(self.data), stop
                return self.header + text
        text, self.pos, self.index = self.data[self.pos:end], end, stop
        self._drop_read()
        return self.header + text + FOOTER + b"\n"


def read_hepmc(path: str | os.PathLike[str], batch_size: int = 500, max_events: int | None = None) -> Iterator[HepMCBatch]:
    """Yield batches of the file's events; a truncated or unreadable file, NaN momenta or no events are an InputError."""
    path = Path(path)
    events = enumerate(itertools.islice(hepmc_events(path), max_events), 1)
    while records := [event_record(event, path, n) for n, event in itertools.islice(events, batch_size)]:
        yield batch_of(records)


@dataclass
class _Record:
    """One event in Pythia's record order."""

    number: int
    weight: float
    columns: dict[str, np.ndarray]


def event_record(event: Any, path: Path, position: int) -> _Record:
    """One HepMC event as Pythia-ordered columns (numpy over the event's flat data); NaN momenta are an InputError
    naming the event."""
    import pyhepmc
    from pyhepmc import GenEventData

    number = int(event.event_number) if int(event.event_number) > 0 else position
    data = GenEventData()
    event.write_data(data)  # particles, vertices and the links between them as arrays
    parts = data.particles
    scale = 1000.0 if data.momentum_unit == pyhepmc.Units.MEV else 1.0  # to GeV
    p4 = np.stack([parts["px"], parts["py"], parts["pz"], parts["e"]], axis=1) / scale
    bad = ~np.isfinite(p4).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{path}: event {number} (number {position} in the file): particle {i + 1} "
                         f"(pdgId {int(parts['pid'][i])}) has a non-finite momentum {p4[i].tolist()}")
    order, m1, m2, d1, d2, vid = _topology(data)
    pos = _positions(data, vid)
    mass = np.where(parts["is_mass_set"], parts["mass"] / scale, _kin.mass(*p4.T))
    status = _pythia_status(parts["status"].astype(np.int32))
    beams = status == -12
    system = {"pid": 90, "status": -11, "px": 0.0, "py": 0.0, "pz": 0.0, "e": float(p4[beams, 3].sum()), "m": 0.0}
    cols = {
        "pid": parts["pid"].astype(np.int32)[order], "status": status[order],
        "px": p4[order, 0], "py": p4[order, 1], "pz": p4[order, 2], "e": p4[order, 3], "m": mass[order],
        "m1": m1, "m2": m2, "d1": d1, "d2": d2,
        "vx": pos[:, 0], "vy": pos[:, 1], "vz": pos[:, 2],
    }
    for key, value in system.items():
        cols[key] = np.concatenate([[value], cols[key]]).astype(cols[key].dtype)
    for key in ("m1", "m2", "d1", "d2", "vx", "vy", "vz"):
        cols[key] = np.concatenate([[0], cols[key]]).astype(cols[key].dtype)
    weight = float(data.weights[0]) if len(data.weights) else 1.0
    if not np.isfinite(weight):
        raise InputError(f"{path}: event {number} (number {position} in the file): the event weight is {weight}")
    return _Record(number, weight, cols)


def _pythia_status(status: np.ndarray) -> np.ndarray:
    """HepMC status codes as Pythia-like ones (``_STATUS``; any other code negated)."""
    out = -np.abs(status)
    for hepmc, pythia in _STATUS.items():
        out[status == hepmc] = pythia
    return out


def _topology(data: Any) -> tuple[np.ndarray, ...]:
    """Pythia order of the particles (0-based HepMC positions), mothers and daughter ranges (1-based new indices),
    and each particle's production vertex position (-1 for none) in that order, from the event's link table."""
    n, n_vertices = len(data.particles), len(data.vertices)
    links1, links2 = np.asarray(data.links1, np.int64), np.asarray(data.links2, np.int64)
    out = links1 < 0  # vertex -> particle (in vertex order, as written); else particle -> vertex
    out_vertex, out_particle = -links1[out] - 1, links2[out] - 1
    in_vertex, in_particle = -links2[~out] - 1, links1[~out] - 1
    produced = np.zeros(n, bool)
    produced[out_particle] = True
    roots = np.flatnonzero(~produced)
    order = np.concatenate([roots, out_particle])
    vertex_of = np.concatenate([np.full(len(roots), -1, np.int64), out_vertex])
    new = np.zeros(n, dtype=np.int64)
    new[order] = np.arange(1, n + 1)
    first_in, last_in, n_in = _extremes(in_vertex, new[in_particle], n_vertices)
    first_out, last_out, n_out = _extremes(out_vertex, new[out_particle], n_vertices)
    m1, m2, d1, d2 = (np.zeros(n, np.int64) for _ in range(4))
    o, i = new[out_particle] - 1, new[in_particle] - 1
    m1[o] = np.where(n_in[out_vertex] > 0, first_in[out_vertex], 0)
    m2[o] = np.where(n_in[out_vertex] > 1, last_in[out_vertex], 0)
    d1[i] = np.where(n_out[in_vertex] > 0, first_out[in_vertex], 0)
    d2[i] = np.where(n_out[in_vertex] > 1, last_out[in_vertex], 0)
    return order, m1, m2, d1, d2, vertex_of


def _extremes(group: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group 0..n-1: the smallest and largest of ``values`` (0 for an empty group) and their count."""
    low = np.full(n, np.iinfo(np.int64).max)
    high = np.zeros(n, np.int64)
    np.minimum.at(low, group, values)
    np.maximum.at(high, group, values)
    count = np.bincount(group, minlength=n)
    return np.where(count > 0, low, 0), high, count


def _positions(data: Any, vertex_of: np.ndarray) -> np.ndarray:
    """Production vertex (x, y, z) in mm of each particle, given its vertex position in the event (-1: none)."""
    import pyhepmc

    verts = data.vertices
    xyz = np.stack([verts["x"], verts["y"], verts["z"]], axis=1)
    if data.length_unit == pyhepmc.Units.CM:
        xyz *= 10.0
    out = np.zeros((len(vertex_of), 3))
    has = vertex_of >= 0
    out[has] = xyz[vertex_of[has]]
    return out


def batch_of(records: list[_Record]) -> HepMCBatch:
    """Concatenate event records into one FlatEvents batch."""
    cat = {key: np.concatenate([r.columns[key] for r in records]) for key in records[0].columns}
    events = FlatEvents(
        counts=np.array([len(r.columns["pid"]) for r in records], np.int64),
        pid=cat["pid"], status=cat["status"], m1=cat["m1"], m2=cat["m2"], d1=cat["d1"], d2=cat["d2"],
        px=cat["px"], py=cat["py"], pz=cat["pz"], e=cat["e"], m=cat["m"], vx=cat["vx"], vy=cat["vy"], vz=cat["vz"],
        charge=charges(cat["pid"]), weight=np.array([r.weight for r in records], np.float64),
    )
    return HepMCBatch(events, np.array([r.number for r in records], np.uint64))
