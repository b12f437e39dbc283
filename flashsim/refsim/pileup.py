"""Pileup: a cached pool of Pythia min-bias events per sample seed, and its overlay on a batch, each overlaid
event at its own azimuth and z orientation, so that samples of different seeds share no pileup and a pool
event reused within a sample never lands on the same particles twice."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashsim.files import atomic_output

from . import _kin

POOL_VERSION = 1
POOL_SEED = 20240601
_COLUMNS = ("px", "py", "pz", "e", "pdgId", "charge", "vx", "vy", "vz")


def default_cache_dir() -> Path:
    """``$FLASHSIM_CACHE_DIR/refsim`` or ``~/.cache/flashsim/refsim``."""
    base = os.environ.get("FLASHSIM_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "flashsim"
    return root / "refsim"


def pool_seed(seed: int) -> int:
    """The min-bias pool's seed for a sample seed: samples of different seeds overlay different pools."""
    return int(np.random.SeedSequence([POOL_SEED, int(seed)]).generate_state(1)[0])


def draw_pileup(n_events: int, mean: float, rel_width: float, rng: np.random.Generator):
    """Per-event nTrueInt (Gaussian profile around ``mean``) and nPU ~ Poisson(nTrueInt)."""
    if mean <= 0:
        return np.zeros(n_events, np.float32), np.zeros(n_events, np.int32)
    true = np.maximum(mean * (1.0 + rel_width * rng.standard_normal(n_events)), 0.0)
    npu = rng.poisson(true)
    return true.astype(np.float32), npu.astype(np.int32)


@dataclass
class PileupPool:
    """Stable visible particles (|eta| < 5.2) of ``n`` min-bias events, as flat columns."""

    counts: np.ndarray
    columns: dict[str, np.ndarray]
    sqrt_s: float

    @property
    def n(self) -> int:
        return len(self.counts)

    @classmethod
    def empty(cls, sqrt_s: float = 13600.0) -> "PileupPool":
        cols = {c: np.zeros(0, np.float32) for c in _COLUMNS}
        return cls(np.zeros(0, np.int64), cols, sqrt_s)

    @classmethod
    def generate(cls, n: int, sqrt_s: float = 13600.0, seed: int = POOL_SEED, batch: int = 500) -> "PileupPool":
        """Run Pythia min-bias (SoftQCD:nonDiffractive) for ``n`` events."""
        from .pythia import Generator, pythia_seed

        gen = Generator("minbias", sqrt_s=sqrt_s, seed=pythia_seed(seed, 7))
        counts: list[np.ndarray] = []
        cols: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
        left = n
        while left > 0:
            ev = gen.batch(min(batch, left))
            left -= ev.n_events
            evt = _kin.event_index(ev.counts)
            a = np.abs(ev.pid)
            pt, eta, _ = _kin.pt_eta_phi(ev.px, ev.py, ev.pz)
            keep = (ev.status > 0) & ~np.isin(a, (12, 14, 16)) & (np.abs(eta) < 5.2)
            counts.append(np.bincount(evt[keep], minlength=ev.n_events))
            src = {
                "px": ev.px, "py": ev.py, "pz": ev.pz, "e": ev.e, "pdgId": ev.pid,
                "charge": ev.charge, "vx": ev.vx, "vy": ev.vy, "vz": ev.vz,
            }
            for c in _COLUMNS:
                dt = np.int32 if c == "pdgId" else np.float32
                cols[c].append(src[c][keep].astype(dt))
        return cls(np.concatenate(counts).astype(np.int64), {c: np.concatenate(v) for c, v in cols.items()}, sqrt_s)

    @classmethod
    def load_or_generate(
        cls, n: int, sqrt_s: float = 13600.0, cache_dir: str | Path | None = None, seed: int = POOL_SEED
    ) -> "PileupPool":
        """Load the pool from the cache (keyed by its settings) or generate and store it."""
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = cache_dir / f"minbias_v{POOL_VERSION}_sqrts{int(round(sqrt_s))}_n{n}_seed{seed}.npz"
        if path.exists():
            try:
                with np.load(path) as f:
                    return cls(f["counts"], {c: f[c] for c in _COLUMNS}, float(f["sqrt_s"]))
            except (OSError, KeyError, ValueError):
                pass  # corrupt cache: regenerate
        pool = cls.generate(n, sqrt_s=sqrt_s, seed=seed)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as tmp, open(tmp, "wb") as handle:
                # allow_pickle is numpy's default, named so that **columns is not matched against it
                np.savez(handle, allow_pickle=True, counts=pool.counts, sqrt_s=np.float64(sqrt_s), **pool.columns)
        except OSError:
            pass  # read-only cache: keep going without it
        return pool

    def overlay(self, npu: np.ndarray, rng: np.random.Generator, sigma_z: float):
        """Particles of ``npu[i]`` random pool events per event, each rotated to a random azimuth, mirrored in z
        half the time, and shifted to its own z.

        Returns (columns dict, counts per event); vz includes the vertex offset (mm).
        """
        npu = np.asarray(npu, dtype=np.int64)
        n_ev = len(npu)
        if self.n == 0 or npu.sum() == 0:
            return {c: np.zeros(0, self.columns[c].dtype) for c in _COLUMNS}, np.zeros(n_ev, np.int64)
        pick = rng.integers(0, self.n, size=int(npu.sum()))
        z0 = rng.normal(0.0, sigma_z, size=len(pick)).astype(np.float32)
        angle = rng.uniform(-np.pi, np.pi, size=len(pick))  # min-bias is symmetric in azimuth and in z -> -z
        mirror = rng.random(len(pick)) < 0.5
        pstart = _kin.starts_of(self.counts)
        pc = self.counts[pick]
        idx = np.repeat(pstart[pick], pc) + _kin.ragged_arange(pc)
        out = {c: self.columns[c][idx] for c in _COLUMNS}
        cos, sin = np.repeat(np.cos(angle), pc).astype(np.float32), np.repeat(np.sin(angle), pc).astype(np.float32)
        for x, y in (("px", "py"), ("vx", "vy")):
            out[x], out[y] = cos * out[x] - sin * out[y], sin * out[x] + cos * out[y]
        sign = np.where(np.repeat(mirror, pc), np.float32(-1), np.float32(1))
        out["pz"] = sign * out["pz"]
        out["vz"] = sign * out["vz"] + np.repeat(z0, pc)
        vertex_event = np.repeat(np.arange(n_ev), npu)
        counts = np.bincount(vertex_event, weights=pc, minlength=n_ev).astype(np.int64)
        return out, counts
