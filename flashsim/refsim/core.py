"""``generate``: Pythia GEN + parametric detector, yielded as NanoAOD-like awkward chunks."""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import awkward as ak
import numpy as np

from flashsim.errors import ConfigError, FlashsimError
from flashsim.interrupts import stop_if_signalled

from .detector import simulate_detector
from .gen import build_gen
from .params import DetectorParams
from .pileup import PileupPool, draw_pileup, pool_seed
from .pythia import PROCESSES, FlatEvents, Generator, pythia_seed

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

DEFAULT_SQRT_S = 13600.0
DEFAULT_BATCH_SIZE = 250
EVENTS_PER_LUMI = 1000


def event_ids(first_event: int, n: int, run: int = 1, lumi: int | None = None) -> dict[str, np.ndarray]:
    """run, luminosityBlock and event of ``n`` events numbered from ``first_event`` (refsim: EVENTS_PER_LUMI per lumi)."""
    event = np.arange(first_event, first_event + n, dtype=np.uint64)
    block = (1 + (event - 1) // EVENTS_PER_LUMI) if lumi is None else np.full(n, lumi)
    return {"run": np.full(n, run, np.uint32), "luminosityBlock": block.astype(np.uint32), "event": event}


def gen_collections(ev: FlatEvents, params: DetectorParams, pileup: float, rng: np.random.Generator) -> dict:
    """The GEN record of a batch (``build_gen``) with Pileup_nTrueInt / nPU drawn around ``pileup``."""
    gen = build_gen(ev, params)
    true, npu = draw_pileup(ev.n_events, pileup, params.pu_profile_width, rng)
    gen["Pileup"] = ak.zip({"nPU": npu, "nTrueInt": true}, depth_limit=1)
    return gen


def assemble_events(gen: dict, reco: dict | None, ids: dict[str, np.ndarray], extra: dict | None = None) -> ak.Array:
    """One record array per event with NanoAOD collections as fields (event ids, GEN, ``extra``, RECO)."""
    cols = {
        **ids,
        "genWeight": gen["genWeight"].astype(np.float32),
        "Pileup": gen["Pileup"],
        "GenMET": gen["GenMET"],
        "GenJet": gen["GenJet"],
        "GenPart": gen["GenPart"],
        **(extra or {}),
    }
    if reco is not None:
        for k in ("Jet", "Muon", "Electron", "Photon", "MET", "PuppiMET", "fixedGridRhoFastjetAll", "PV_npvs"):
            if k in reco:
                cols[k] = reco[k]
    return ak.zip(cols, depth_limit=1)


def paired_events(ev: FlatEvents, params: DetectorParams, pileup: float, rng: np.random.Generator,
                  pool: PileupPool | None, ids: dict[str, np.ndarray], reco: bool = True,
                  extra: dict | None = None) -> ak.Array:
    """A batch's GEN collections (pileup drawn around ``pileup``) and, when ``reco``, the detector's RECO with
    ``pool`` overlaid, both from ``rng`` in that order, as one record array per event."""
    gen = gen_collections(ev, params, pileup, rng)
    return assemble_events(gen, simulate_detector(gen, pool, params, rng) if reco else None, ids, extra)


def pileup_pool(params: DetectorParams, pileup: float, seed: int, sqrt_s: float = DEFAULT_SQRT_S,
                cache_dir: str | Path | None = None) -> PileupPool | None:
    """The min-bias pool overlaid on the events of sample ``seed`` (None without pileup), cached in ``cache_dir``."""
    if pileup <= 0:
        return None
    return PileupPool.load_or_generate(params.pu_pool_size, sqrt_s=sqrt_s, cache_dir=cache_dir, seed=pool_seed(seed))


class _Worker:
    """Generator state of one worker: its own Pythia and numpy streams."""

    def __init__(self, process, sqrt_s, pthat_min, seed, worker, pileup, params, pool, gen_only):
        self.gen = Generator(process, sqrt_s=sqrt_s, pthat_min=pthat_min, seed=pythia_seed(seed, worker, 1))
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(worker), 2]))
        self.pileup = float(pileup)
        self.params = params
        self.pool = pool
        self.gen_only = gen_only

    def chunk(self, n: int, first_event: int) -> ak.Array:
        return paired_events(self.gen.batch(n), self.params, self.pileup, self.rng, self.pool,
                             event_ids(first_event, n), reco=not self.gen_only)


def _tasks(n_events: int, batch_size: int):
    """(task index, n, first event number) for every chunk."""
    out = []
    k, done = 0, 0
    while done < n_events:
        n = min(batch_size, n_events - done)
        out.append((k, n, done + 1))
        k += 1
        done += n
    return out


def _worker_main(w, workers, args, tasks, q):
    try:
        state = _Worker(*args[:4], w, *args[4:])
        for k, n, first in tasks:
            if k % workers == w:
                q.put((k, state.chunk(n, first)))
    except FlashsimError as exc:  # a bad setting: the parent raises it as it is
        q.put((-2, exc))
    except BaseException:  # noqa: BLE001  (a worker reports every failure, never hangs the parent)
        q.put((-1, traceback.format_exc()))


def generate(
    process: str,
    n_events: int,
    pileup: float = 35.0,
    seed: int = 1,
    sqrt_s: float = DEFAULT_SQRT_S,
    pthat_min: float | None = None,
    params: DetectorParams | None = None,
    gen_only: bool = False,
    workers: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_dir: str | Path | None = None,
) -> Iterator[ak.Array]:
    """Yield chunks (``ak.Array`` of events) of Pythia GEN + parametric-detector RECO.

    Same ``seed`` and ``workers`` give identical output.  Chunks come in event order;
    with ``workers > 1`` chunk k is made by worker ``k % workers`` (its own Pythia and
    random streams, seeded from (seed, worker)).
    """
    if process not in PROCESSES:
        raise ConfigError(f"unknown process {process!r}; choose from {sorted(PROCESSES)}")
    if n_events <= 0:
        return
    params = params or DetectorParams()
    pool = None if gen_only else pileup_pool(params, pileup, seed, sqrt_s, cache_dir)
    tasks = _tasks(int(n_events), max(int(batch_size), 1))
    workers = max(1, min(int(workers), len(tasks)))
    args = (process, sqrt_s, pthat_min, seed, pileup, params, pool, gen_only)
    if workers == 1:
        state = _Worker(*args[:4], 0, *args[4:])
        for _, n, first in tasks:
            stop_if_signalled()
            yield state.chunk(n, first)
        return

    yield from _parallel_chunks(args, tasks, workers)


def _parallel_chunks(args: tuple, tasks: list, workers: int) -> Iterator[ak.Array]:
    """Chunks made by ``workers`` processes (chunk k by worker k % workers), yielded in event order."""
    # forkserver/spawn, not fork: the caller may run threads (e.g. a rich progress bar)
    # whose locks a forked child would inherit
    ctx: ForkServerContext | SpawnContext
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["flashsim.refsim.core"])
    else:
        ctx = mp.get_context("spawn")
    queues = [ctx.Queue(maxsize=2) for _ in range(workers)]
    procs = [ctx.Process(target=_worker_main, args=(w, workers, args, tasks, queues[w]), daemon=True)
             for w in range(workers)]
    for pr in procs:
        pr.start()
    try:
        for k, _, _ in tasks:
            stop_if_signalled()
            w = k % workers
            while True:
                try:
                    kk, payload = queues[w].get(timeout=5.0)
                    break
                except queue.Empty:
                    if not procs[w].is_alive():
                        raise RuntimeError(f"refsim worker {w} died") from None
            yield _payload(kk, payload, w)
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.terminate()
            pr.join(timeout=5)


def _payload(kind: int, payload: Any, worker: int) -> Any:
    """A worker's chunk, or the error it reported (-2: a flashsim error as it is, -1: a traceback)."""
    if kind == -2:
        raise payload
    if kind < 0:
        raise RuntimeError(f"refsim worker {worker} failed:\n{payload}")
    return payload
