"""Les Houches event files (.lhe, .lhe.gz): the CMS LHE branches, parsed with the standard library's iterparse.

``LHEPart_*`` (incoming and outgoing partons, as CMS's LHETablesProducer: incoming ones carry pt = eta = phi = 0
and their ``incomingpz``), ``LHE_HT`` / ``LHE_Njets`` (outgoing quarks and gluons whose mother is incoming),
``LHEWeight_originalXWGTUP``, and ``LHEScaleWeight`` / ``LHEPdfWeight`` (w / XWGTUP) where the header declares
the weight groups (a group named ``*scale*`` and the first group named ``*pdf*`` or combined as hessian/replicas).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from xml.etree import ElementTree

import awkward as ak
import numpy as np

from flashsim.errors import InputError

__all__ = ["LHEEvent", "LHEHeader", "count_events", "hard_partons", "lhe_collections", "read_lhe"]

_RUN_CARD = re.compile(r"^\s*(\S+)\s*=\s*(ickkw|xqcut|ptj|maxjetflavor)\b", re.MULTILINE)
_END = b"</event>"
_PDF_COMBINE = ("hessian", "replicas", "gaussian", "symmhessian")


@dataclass
class LHEHeader:
    """What the header and <init> say: run-card values, the scale and PDF weight ids, the init block."""

    run_card: dict[str, str] = field(default_factory=dict)
    scale_ids: list[str] = field(default_factory=list)
    pdf_ids: list[str] = field(default_factory=list)
    init: str | None = None


@dataclass
class LHEEvent:
    """One event: XWGTUP, particle table (NUP x 13 floats: IDUP ISTUP MOTHUP1-2 ICOLUP1-2 PUP1-5 VTIMUP SPINUP), weights,
    and the <event> tag's attributes (e.g. MadGraph5_aMC@NLO's npNLO)."""

    xwgtup: float
    particles: np.ndarray
    weights: dict[str, float]
    attributes: dict[str, str] = field(default_factory=dict)


def count_events(path: str | os.PathLike[str]) -> int:
    """The number of </event> tags in the file (a fast scan, no parsing)."""
    n, carry = 0, b""
    try:
        with _open(Path(path)) as handle:
            while block := handle.read(1 << 22):
                data = carry + block
                n += data.count(_END)
                carry = data[-(len(_END) - 1):]
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip ({exc})") from exc
    return n


def hard_partons(table: np.ndarray, flavours: int = 5, starts: np.ndarray | None = None) -> np.ndarray:
    """Mask over a particle table (one event, or events concatenated with ``starts`` the first row of each row's event)
    of the outgoing quarks (|IDUP| <= ``flavours``) and gluons whose mother is incoming (a mother index 0 reads the
    event's first particle, an incoming one)."""
    starts = np.zeros(len(table), np.int64) if starts is None else starts
    status = table[:, 1].astype(np.int32)
    mothers = [np.clip(table[:, c].astype(np.int64) - 1, 0, None) + starts for c in (2, 3)]
    from_incoming = (status[mothers[0]] < 0) | (status[mothers[1]] < 0)
    a = np.abs(table[:, 0].astype(np.int32))
    return (status == 1) & ((a <= flavours) | (a == 21)) & from_incoming & (table[:, 2] > 0)


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb"))


def read_lhe(path: str | os.PathLike[str], header: LHEHeader, max_events: int | None = None) -> Generator[LHEEvent, None, None]:
    """Yield the events of an LHE file, filling ``header`` as it is read (before the first event)."""
    path = Path(path)
    n = 0
    try:
        with _open(path) as handle:
            for elem in _ends(handle, path):
                if elem.tag == "header":
                    _read_header(elem, header)
                elif elem.tag == "init":
                    header.init = elem.text or ""
                elif elem.tag == "event":
                    if header.init is None:
                        raise InputError(f"{path}: no <init> block before the first event")
                    n += 1
                    yield _event(elem, path, n)
                    if max_events is not None and n >= max_events:
                        return
    except ElementTree.ParseError as exc:
        raise InputError(f"{path}: truncated or malformed LHE after event {n} ({exc})") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip after event {n} ({exc})") from exc
    if header.init is None:
        raise InputError(f"{path}: no <init> block")
    if n == 0:
        raise InputError(f"{path}: holds no events")


def _ends(handle: IO[bytes], path: Path) -> Iterator[Any]:
    """The elements of an LHE stream as they end (root element checked; finished events are freed)."""
    root: Any = None
    for kind, elem in ElementTree.iterparse(handle, events=("start", "end")):
        if root is None:
            root = elem
            if elem.tag != "LesHouchesEvents":
                raise InputError(f"{path}: not an LHE file (starts with <{elem.tag}>, not <LesHouchesEvents>)")
        if kind == "end":
            yield elem
            if elem.tag == "event":
                root.clear()


def _read_header(elem: Any, header: LHEHeader) -> None:
    """Run-card values and weight groups from the <header> element."""
    text = "".join(elem.itertext())
    header.run_card.update({key: value for value, key in _RUN_CARD.findall(text)})
    for group in elem.iter("weightgroup"):
        name = (group.get("name") or group.get("type") or "").lower()
        ids = [w.get("id", "") for w in group.iter("weight")]
        if "scale" in name and not header.scale_ids:
            header.scale_ids = ids
        elif ("pdf" in name or (group.get("combine") or "").lower() in _PDF_COMBINE) and not header.pdf_ids:
            header.pdf_ids = ids


def _event(elem: Any, path: Path, n: int) -> LHEEvent:
    """Parse one <event> element; a short or non-numeric particle table or NaN momenta are an InputError."""
    lines = [ln for ln in (elem.text or "").strip().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        first = lines[0].split()
        nup, xwgtup = int(first[0]), float(first[2])
        table = np.array([[float(x) for x in ln.split()[:13]] for ln in lines[1:1 + nup]], dtype=np.float64)
    except (IndexError, ValueError) as exc:
        raise InputError(f"{path}: event {n}: cannot read the event block ({exc})") from exc
    if table.shape != (nup, 13):
        raise InputError(f"{path}: event {n}: NUP = {nup} particles announced, {len(table)} complete lines found")
    if not (np.isfinite(table).all() and np.isfinite(xwgtup)):
        raise InputError(f"{path}: event {n}: non-finite momentum or weight in the event block")
    return LHEEvent(xwgtup, table, _weights(elem, path, n), {k: v.strip() for k, v in elem.attrib.items()})


def _weights(elem: Any, path: Path, n: int) -> dict[str, float]:
    """The event's named weights (<wgt id=...> or <weight id=...>); a missing or non-finite value is an InputError."""
    weights = {}
    for w in [*elem.iter("wgt"), *elem.iter("weight")]:
        key, text = w.get("id", ""), (w.text or "").strip()
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise InputError(f"{path}: event {n}: weight id={key!r} has the value {text!r}")
        weights[key] = value
    return weights


def lhe_collections(events: list[LHEEvent], header: LHEHeader) -> dict[str, ak.Array]:
    """The CMS LHE branches of a list of events, as event-record fields."""
    counts = np.array([len(e.particles) for e in events], np.int64)
    table = np.concatenate([e.particles for e in events])
    pid, status = table[:, 0].astype(np.int32), table[:, 1].astype(np.int32)
    px, py, pz, mass = table[:, 6], table[:, 7], table[:, 8], table[:, 10]
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    jet = hard_partons(table, starts=starts)
    pt = np.hypot(px, py)
    incoming = status < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(incoming | (pt == 0), 0.0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)))
    keep = np.abs(status) == 1
    event_of = np.repeat(np.arange(len(events)), counts)
    part = {
        "pt": np.where(incoming, 0.0, pt), "eta": eta, "phi": np.where(incoming, 0.0, np.arctan2(py, px)), "mass": mass,
        "pdgId": pid, "status": status, "incomingpz": np.where(incoming, pz, 0.0), "spin": table[:, 12],
    }
    types = {"pdgId": np.int32, "status": np.int32, "spin": np.int32}
    lhepart = ak.unflatten(ak.zip({k: v[keep].astype(types.get(k, np.float32)) for k, v in part.items()}),
                           np.bincount(event_of[keep], minlength=len(events)))
    xwgtup = np.array([e.xwgtup for e in events], np.float64)
    out = {
        "LHEPart": lhepart,
        "LHE": ak.zip({"HT": np.bincount(event_of[jet], weights=pt[jet], minlength=len(events)).astype(np.float32),
                       "Njets": np.bincount(event_of[jet], minlength=len(events)).astype(np.uint8)}, depth_limit=1),
        "LHEWeight": ak.zip({"originalXWGTUP": xwgtup.astype(np.float32)}, depth_limit=1),
    }
    for name, ids in (("LHEScaleWeight", header.scale_ids), ("LHEPdfWeight", header.pdf_ids)):
        if ids:
            out[name] = _weight_ratios(events, ids, xwgtup)
    return out


def _weight_ratios(events: list[LHEEvent], ids: list[str], xwgtup: np.ndarray) -> ak.Array:
    """Per event, w(id) / XWGTUP for the ids the event carries (NaN-free; an event without them gets an empty list)."""
    rows = [[e.weights[i] / x for i in ids if i in e.weights] if x != 0 else [] for e, x in zip(events, xwgtup)]
    return ak.values_astype(ak.Array(rows, with_name=None), np.float32)
