"""Random streams keyed by the event: every random number a unit draws comes from a counter-based
generator (Philox4x32-10, vectorised over rows) keyed by (seed, unit, purpose, run, luminosityBlock,
event, object index) and counted by the draw, so an output does not depend on chunking, batching,
partitioning, worker count or order, and one event can be simulated again alone.

A model draws from a :class:`Noise`: :class:`RowNoise` (one key per row, as the chain uses) or
:class:`GeneratorNoise` (a ``torch.Generator``, for direct use of a model).
"""

from __future__ import annotations

import warnings
import zlib
from typing import Any, Protocol

import awkward as ak
import numpy as np
import torch

__all__ = ["Noise", "RowNoise", "GeneratorNoise", "as_noise", "philox4x32", "philox4x32_torch", "event_keys", "mix"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_EVENT_ID_COLUMNS = ("run", "luminosityBlock", "event")


def mix(keys: np.ndarray, value: Any) -> np.ndarray:
    """SplitMix64 of ``keys`` xor ``value``: a new well-mixed 64-bit key per row (value per row or scalar)."""
    with np.errstate(over="ignore"):
        z = np.asarray(keys, np.uint64) ^ np.asarray(value).astype(np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _tag(text: str) -> np.uint64:
    return np.uint64(zlib.crc32(text.encode()))


def philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Philox4x32 (Salmon et al. 2011): ``counter (4, n)`` and ``key (2, n)`` uint32 words -> ``(4, n)`` uint32 words."""
    c0, c1, c2, c3 = (np.asarray(w, np.uint64) for w in counter)
    k0, k1 = (np.asarray(w, np.uint64) for w in key)
    for _ in range(rounds):
        p0, p1 = _M0 * c0, _M1 * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0) & _LOW32, p1 & _LOW32, ((p0 >> np.uint64(32)) ^ c3 ^ k1) & _LOW32, p0 & _LOW32
        k0, k1 = (k0 + _W0) & _LOW32, (k1 + _W1) & _LOW32
    return np.stack([c0, c1, c2, c3]).astype(np.uint32)


def philox4x32_torch(counter: torch.Tensor, key: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """:func:`philox4x32` on int64 tensors holding uint32 words, on any device (the same bits)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        p0, p1 = c0 * int(_M0), c2 * int(_M1)  # exact modulo 2**64; the masks below keep the words unsigned
        c0, c1, c2, c3 = ((p1 >> 32) & 0xFFFFFFFF) ^ c1 ^ k0, p1 & 0xFFFFFFFF, ((p0 >> 32) & 0xFFFFFFFF) ^ c3 ^ k1, p0 & 0xFFFFFFFF
        k0, k1 = (k0 + int(_W0)) & 0xFFFFFFFF, (k1 + int(_W1)) & 0xFFFFFFFF
    return torch.stack([c0, c1, c2, c3])


class Noise(Protocol):
    """Where a model's random numbers come from, row by row."""

    def normal(self, n: int, d: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...

    def uniform(self, n: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...

    def subset(self, index: Any) -> Noise: ...


class RowNoise:
    """Counter-based random numbers, one 64-bit key per row; ``draw`` counts redraws of the same rows."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.asarray(keys, np.uint64)

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: Any) -> RowNoise:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return RowNoise(self.keys[index])

    def derive(self, purpose: str) -> RowNoise:
        """An independent stream for another purpose (a classifier's decision, an ordering redraw)."""
        return RowNoise(mix(self.keys, _tag(purpose)))

    def _uniforms(self, n: int, k: int, draw: int, device: torch.device) -> torch.Tensor:
        """``(n, k)`` float64 uniforms in (0, 1) with 53-bit resolution, two per Philox block; computed on
        ``device`` (numpy on the CPU, torch elsewhere: the same bits)."""
        if n != len(self.keys):
            raise ValueError(f"RowNoise has {len(self.keys)} rows, {n} asked")
        blocks = (k + 1) // 2
        if device.type == "cpu":
            key = np.stack([self.keys & _LOW32, self.keys >> np.uint64(32)])
            out = np.empty((n, 2 * blocks))
            for b in range(blocks):
                counter = np.zeros((4, n), np.uint64)
                counter[0], counter[1] = draw, b
                words = philox4x32(counter, key).astype(np.uint64)
                for j in range(2):
                    bits = ((words[2 * j] << np.uint64(21)) ^ words[2 * j + 1]) & np.uint64((1 << 53) - 1)
                    out[:, 2 * b + j] = (bits.astype(np.float64) + 0.5) / float(1 << 53)
            return torch.as_tensor(out[:, :k])
        keys = torch.as_tensor(self.keys.view(np.int64), device=device)
        tkey = torch.stack([keys & 0xFFFFFFFF, (keys >> 32) & 0xFFFFFFFF])
        columns = []
        for b in range(blocks):
            tcounter = torch.zeros((4, n), dtype=torch.int64, device=device)
            tcounter[0], tcounter[1] = draw, b
            twords = philox4x32_torch(tcounter, tkey)
            for j in range(2):
                tbits = ((twords[2 * j] << 21) ^ twords[2 * j + 1]) & ((1 << 53) - 1)
                columns.append((tbits.to(torch.float64) + 0.5) / float(1 << 53))
        return torch.stack(columns, dim=1)[:, :k]

    def normal(self, n: int, d: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        u = self._uniforms(n, 2 * ((d + 1) // 2), draw, device)
        radius = torch.sqrt(-2.0 * torch.log(u[:, 0::2]))
        angle = 2.0 * torch.pi * u[:, 1::2]
        z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=2).reshape(n, -1)
        return z[:, :d].to(dtype)

    def uniform(self, n: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self._uniforms(n, 1, draw, device)[:, 0].to(dtype)


class GeneratorNoise:
    """Random numbers from a ``torch.Generator`` (rows are not keyed: the batch order matters)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def subset(self, index: Any) -> GeneratorNoise:  # noqa: ARG002  (a stream with no rows)
        return self

    def normal(self, n: int, d: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:  # noqa: ARG002
        return torch.randn(n, d, generator=self.generator, device=device, dtype=dtype)

    def uniform(self, n: int, draw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:  # noqa: ARG002
        return torch.rand(n, generator=self.generator, device=device, dtype=dtype)


def as_noise(source: Noise | torch.Generator) -> Noise:
    """A :class:`Noise` from a noise source or a ``torch.Generator``."""
    return GeneratorNoise(source) if isinstance(source, torch.Generator) else source


def event_keys(events: ak.Array, seed: int, unit: str) -> np.ndarray:
    """One key per event from (seed, unit, run, luminosityBlock, event, oversample index).

    Without the event ids the position in ``events`` stands in for them, with a warning: the output then
    depends on how the input is cut into chunks.
    """
    keys = mix(np.full(len(events), np.uint64(seed & 0xFFFFFFFFFFFFFFFF)), _tag(unit))
    if all(c in events.fields for c in _EVENT_ID_COLUMNS):
        for column in _EVENT_ID_COLUMNS:
            keys = mix(keys, ak.to_numpy(events[column]).astype(np.uint64))
    else:
        warnings.warn(f"unit {unit!r}: the events have no {'/'.join(_EVENT_ID_COLUMNS)}; random numbers are keyed by the "
                      "position in each chunk, so the output depends on the chunking", stacklevel=3)
        keys = mix(keys, np.arange(len(events), dtype=np.uint64))
    if "FlashSim" in events.fields and "oversampleIndex" in events.FlashSim.fields:
        keys = mix(keys, ak.to_numpy(events.FlashSim.oversampleIndex).astype(np.uint64))
    return keys
