"""Chunks of one generation spread over local worker processes and handed back in input order, so a
single output file is written while every core simulates. Random numbers are keyed by the event, so
the output is the same whatever the number of processes."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Chunk", "available_cores", "chunks_of", "run_in_processes"]


@dataclass(frozen=True)
class Chunk:
    """Entries [start, stop) of one input file."""

    path: str
    start: int
    stop: int


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def chunks_of(files: Sequence[str | os.PathLike[str]], entries: Sequence[int], step_size: int) -> list[Chunk]:
    """The chunks of ``step_size`` entries of each file, in input order."""
    return [Chunk(os.fspath(path), start, min(start + step_size, n)) for path, n in zip(files, entries) for start in range(0, n, step_size)]


_WORK: dict[str, Any] = {}  # per worker process: the function that turns a chunk into its output


def _start(make: Callable[[], Callable[[Chunk], Any]], threads: int) -> None:
    torch.set_num_threads(threads)
    _WORK["run"] = make()


def _run(chunk: Chunk) -> Any:
    return _WORK["run"](chunk)


def run_in_processes(make: Callable[[], Callable[[Chunk], Any]], chunks: Sequence[Chunk], processes: int,
                     threads: int = 1) -> Iterator[Any]:
    """Outputs of ``make()(chunk)`` for every chunk, in order, computed by ``processes`` worker processes
    (``make`` runs once in each, e.g. to load the units); at most two chunks per process are in flight."""
    context = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start, initargs=(make, threads)) as pool:
        pending: deque[Future[Any]] = deque()
        try:
            for chunk in chunks:
                pending.append(pool.submit(_run, chunk))
                if len(pending) >= 2 * processes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
