"""Scale-out of generation and dataset extraction: the inputs are split into partitions
(file, entry_start, entry_stop), one task each, run in-process or on a dask cluster.

Same numbers whatever the layout: random numbers are keyed by the event (:mod:`flashsim.streams`),
so one worker, N workers, any scheduling order, any partition size and a run without dask write the
same events as a single-file ``generate``.

Each partition is written atomically to ``<output_dir>/<dataset>/<stem>_<start>_<stop>.<ext>``
followed by a done marker; ``manifest.json`` (inputs with hashes, partitions with seeds and
counts, unit hashes, settings) is written last. Rerunning skips completed partitions and redoes
missing or failed ones.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashsim.errors import ConfigError, FlashsimError, InputError
from flashsim.files import atomic_write_text
from flashsim.interrupts import stop_if_signalled

if TYPE_CHECKING:  # dask is optional: a local run never imports it
    from distributed import Client

__all__ = [
    "DEFAULT_PARTITION_SIZE",
    "Manifest",
    "Partition",
    "PartitionsFailed",
    "cluster",
    "extract_partitions",
    "generate_partitions",
    "load_fileset",
    "merge_outputs",
]

DEFAULT_PARTITION_SIZE = 50_000
DEFAULT_DATASET = "default"  # dataset name of inputs given as paths or globs (not a fileset)
MANIFEST = "manifest.json"
RETRIES = 2  # resubmissions of a task that raised unexpectedly; a FlashsimError is final (see _final_errors)

PathLike = str | os.PathLike[str]
Inputs = PathLike | Sequence[PathLike] | Mapping[str, Any]
Progress = Callable[[int, int, int, int], None]  # (partitions done, partitions, events done, events)


class PartitionsFailed(FlashsimError):
    """Some partitions (or input files) failed; the others are written and recorded in ``manifest``."""

    def __init__(self, failures: list[dict[str, str]], manifest: Manifest) -> None:
        self.failures = failures
        self.manifest = manifest
        lines = [f"  {f['input']} ({f['what']}): {f['error'].removeprefix(f['input'] + ': ')}" for f in failures[:20]]
        more = [f"  … and {len(failures) - 20} more (see {manifest.path})"] if len(failures) > 20 else []
        super().__init__(f"{len(failures)} partition(s) or input file(s) failed; rerun the same command to redo "
                         "only these:\n"
                         + "\n".join(lines + more) + f"\nmanifest (incomplete): {manifest.path}")


@dataclass(frozen=True)
class Partition:
    """One task: entries [entry_start, entry_stop) of one input file, and where its output goes."""

    dataset: str
    path: str
    tree: str
    file_sha256: str
    file_index: int
    entry_start: int
    entry_stop: int
    seed: int
    output: str  # relative to the output directory


@dataclass
class Manifest:
    """What a partitioned run read, with which units and settings, and what it wrote."""

    path: Path
    kind: str  # "generate" or "dataset"
    flashsim_version: str
    settings: dict[str, Any]
    units: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    partitions: list[dict[str, Any]]
    failures: list[dict[str, str]] = field(default_factory=list)
    report: dict[str, Any] | None = None  # extraction report (kind "dataset")
    run: dict[str, Any] = field(default_factory=dict)  # this run: partitions done / skipped / failed, seconds

    @property
    def complete(self) -> bool:
        return not self.failures

    @property
    def events(self) -> int:
        """Events written (generate) or read (dataset) by the completed partitions."""
        return sum(p["events"] for p in self.partitions if p["status"] == "done")

    def outputs(self, dataset: str | None = None) -> list[Path]:
        """Completed partition files, in partition order (optionally of one dataset).

        A generate partition whose events all failed an event selection has no file.
        """
        return [self.path.parent / p["output"] for p in self.partitions
                if p["status"] == "done" and (dataset is None or p["dataset"] == dataset)
                and (p["events"] or self.kind == "dataset")]

    @property
    def skipped_events(self) -> Counter[str]:
        """Events dropped for a non-finite or unphysical GEN value (``on_bad_input = "skip"``), per branch."""
        total: Counter[str] = Counter()
        for p in self.partitions:
            total.update(p.get("skipped", {}))
        return total

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(p["dataset"] for p in self.partitions))

    def save(self) -> Path:
        """Write atomically (temporary file, then rename)."""
        data = {"flashsim_manifest": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "complete": self.complete, **{k: v for k, v in asdict(self).items() if k != "path"}}
        _write_json(self.path, data)
        return self.path

    @classmethod
    def load(cls, path: PathLike) -> Manifest:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable flashsim manifest ({exc})") from exc
        names = {f for f in cls.__dataclass_fields__ if f != "path"}
        return cls(path=path, **{k: v for k, v in data.items() if k in names})


# ---- inputs ---------------------------------------------------------------------------------------


def load_fileset(path: PathLike) -> dict[str, Any]:
    """A coffea-style fileset JSON: ``{"dataset": {"files": {"file.root": "Events"}}}`` (or a file list)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable fileset JSON ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a fileset is an object {{dataset: {{'files': {{path: tree}}}}}}")
    return data


def _input_files(inputs: Inputs) -> list[tuple[str, Path, str]]:
    """(dataset, path, tree) for every input file, in a stable order."""
    from flashsim.io import resolve_inputs

    if isinstance(inputs, (str, os.PathLike)) and os.fspath(inputs).endswith(".json"):
        inputs = load_fileset(inputs)
    if not isinstance(inputs, Mapping):
        return [(DEFAULT_DATASET, path, "Events") for path in resolve_inputs(inputs)]
    files: list[tuple[str, Path, str]] = []
    names: dict[str, str] = {}
    for dataset, spec in inputs.items():
        entries = spec.get("files", spec) if isinstance(spec, Mapping) else spec
        if isinstance(entries, str) or not isinstance(entries, (Mapping, Sequence)):
            raise InputError(f"fileset dataset {dataset!r}: 'files' must map paths to tree names or list paths")
        pairs = entries.items() if isinstance(entries, Mapping) else ((p, "Events") for p in entries)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset)).strip("._") or DEFAULT_DATASET
        if names.setdefault(safe, dataset) != dataset:
            raise InputError(f"fileset datasets {names[safe]!r} and {dataset!r} map to the same directory {safe!r}")
        for name, tree in pairs:
            files.extend((safe, path, tree or "Events") for path in resolve_inputs(name))
    if not files:
        raise InputError("the fileset lists no files")
    return files


def _scan(path: str, tree: str) -> dict[str, Any]:
    """Size, content hash and entry count of one input (runs where the tasks run)."""
    from flashsim.files import file_digest
    from flashsim.io import open_source

    stat = Path(path).stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_digest(Path(path)),
            "num_entries": open_source(path, tree).num_entries}


def _previous_inputs(output_dir: Path) -> dict[tuple, dict[str, Any]]:
    """Scans recorded by an earlier run, reused while a file's path, size and mtime are unchanged."""
    try:
        inputs = json.loads((output_dir / MANIFEST).read_text()).get("inputs", [])
    except (OSError, ValueError):
        return {}
    return {(i["path"], i["tree"], i["bytes"], i["mtime_ns"]): i for i in inputs if i.get("num_entries")}


# ---- planning -------------------------------------------------------------------------------------


@dataclass
class _Job:
    """Everything a task needs besides its partition (sent with each task; small)."""

    kind: str
    output_dir: str
    fingerprint: str  # settings + unit hashes + flashsim version; a partition is reused only if it matches
    units: tuple[str, ...]
    device: str = "cpu"
    precision: str = "float32"  # of the coupling flows' conditioners
    batch_size: int = 100_000
    keep_gen: bool = False
    oversample: int = 1
    format: str = "root"
    threads: int = 1
    skip_bad: bool = False  # drop and count events with a non-finite or unphysical GEN value
    nano_version: str | None = None  # of the output; None: each input's own


def _plan(files: list[dict[str, Any]], partition_size: int, seed: int, suffix: str) -> list[Partition]:

    stems: dict[tuple[str, str], set[str]] = {}
    for f in files:
        stems.setdefault((f["dataset"], Path(f["path"]).stem), set()).add(f["sha256"])
    taken: set[tuple[str, str]] = set()
    partitions = []
    for index, f in enumerate(files):
        if f.get("error"):
            continue
        stem = Path(f["path"]).stem
        if len(stems[(f["dataset"], stem)]) > 1:  # same name, other content (e.g. from two directories)
            stem = f"{stem}-{f['sha256'][:10]}"
        if (f["dataset"], stem) in taken:
            raise InputError(f"{f['path']}: the same file content is listed twice in dataset {f['dataset']!r}")
        taken.add((f["dataset"], stem))
        for start in range(0, f["num_entries"], partition_size):
            stop = min(start + partition_size, f["num_entries"])
            partitions.append(Partition(f["dataset"], f["path"], f["tree"], f["sha256"], f["file_index"], start, stop,
                                        seed,
                                        f"{f['dataset']}/{stem}_{start}_{stop}{suffix}"))
    return partitions


def _digest_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _unit_record(name: str) -> dict[str, Any]:
    """A unit's name, directory, spec version and the SHA-256 over all its files."""
    from flashsim.unit import FORMAT_VERSION, UnitSpec, resolve_unit_dir

    directory = resolve_unit_dir(name).resolve()
    spec = UnitSpec.load(directory / "unit.toml")
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return {"name": spec.name, "path": str(directory), "format_version": FORMAT_VERSION, "sha256": digest.hexdigest()}


def _record(part: Partition, result: dict[str, Any] | None, failures: list[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    """A partition's line in the manifest (a failure also appended to ``failures``)."""
    assert result is not None
    record = {**asdict(part), "status": result["status"], "events": result.get("events", 0)}
    for key in ("skipped", "nano_version"):
        if result.get(key):
            record[key] = result[key]
    if result["status"] == "failed":
        record["error"] = result["error"]
        failures.append({"input": part.path, "what": f"entries {part.entry_start}-{part.entry_stop}", "error": result["error"]})
    else:
        _remove_stale_temporaries(output_dir / part.output)
        if "report" in result:
            record["report"] = result["report"]
    return record


def _worker_count(client: Client | None) -> int:
    """Workers the scheduler knows of now (0 in-process)."""
    return len(client.scheduler_info(n_workers=-1)["workers"]) if client is not None else 0


def _marker(output: Path) -> Path:
    return output.with_name(f".{output.name}.done.json")


def _partition_fingerprint(job: _Job, part: Partition) -> str:
    """Job + partition, without the input's directory: moved inputs (same content) still resume."""
    return _digest_json([job.fingerprint, {k: v for k, v in asdict(part).items() if k != "path"}])


def _completed(job: _Job, part: Partition) -> dict[str, Any] | None:
    """The done marker of a partition whose output exists, is whole and matches this job; else None."""
    output = Path(job.output_dir) / part.output
    try:
        marker = json.loads(_marker(output).read_text())
        size = output.stat().st_size if marker["events"] else None
        ok = marker["fingerprint"] == _partition_fingerprint(job, part) and size == marker["bytes"]
    except (OSError, ValueError, KeyError):
        return None
    return {"status": "done", **marker} if ok else None


# ---- tasks ----------------------------------------------------------------------------------------

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    """One loaded Chain/Unit per process (dask worker), keyed by unit paths + hashes + device."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            if len(_CACHE) >= 4:
                _CACHE.clear()
            _CACHE[key] = build()
        return _CACHE[key]


def _finish(job: _Job, part: Partition, events: int, started: float, **extra: Any) -> dict[str, Any]:
    output = Path(job.output_dir) / part.output
    output.parent.mkdir(parents=True, exist_ok=True)
    size = output.stat().st_size if events else None
    marker = {"fingerprint": _partition_fingerprint(job, part), "bytes": size, "events": events,
              "seconds": round(time.perf_counter() - started, 3), **extra}
    _write_json(_marker(output), marker)
    return {"status": "done", **marker}


def _generate_task(part: Partition, job: _Job) -> dict[str, Any]:
    """Run the chain on one partition and write its file (a FlashsimError fails the partition, see _map)."""
    from flashsim.io import NanoAODWriter

    started = time.perf_counter()
    with _torch_threads(job.threads):
        record, device, skipped, version = _simulate(part, job)
    if len(record) == 0:  # an event selection kept nothing: done, with no file
        return {**_finish(job, part, 0, started, device=device, skipped=skipped), "warnings": []}
    with warnings.catch_warnings(record=True) as caught, \
            NanoAODWriter(Path(job.output_dir) / part.output, job.format, version=version) as writer:
        warnings.simplefilter("always")
        writer.write(record)
    # the writer names the partition file; the client shows each message once, without it
    notes = sorted({str(w.message).split(": ", 1)[-1] for w in caught})
    return {**_finish(job, part, writer.num_events, started, device=device, skipped=skipped, nano_version=version),
            "warnings": notes}


def _simulate(part: Partition, job: _Job) -> tuple[Any, str, dict[str, int], str]:
    """The chain's output record for one partition (the chain loaded once per process), its device, the
    events skipped per branch and the NanoAOD version to write."""
    from flashsim.chain import Chain
    from flashsim.events import from_branches
    from flashsim.io import open_source

    chain = _cached(("chain", job.units, job.fingerprint, job.device, job.precision),
                    lambda: Chain(list(job.units), job.device, job.precision))
    source = open_source(part.path, part.tree)
    events = from_branches(source.read(source.select(), part.entry_start, part.entry_stop))
    if len(events) != part.entry_stop - part.entry_start:
        raise InputError(f"{part.path}: has {source.num_entries} entries, fewer than planned; rerun to re-plan")
    skipped: Counter[str] = Counter()
    record = chain.process(events, seed=part.seed, batch_size=job.batch_size, keep_gen=job.keep_gen,
                           oversample=job.oversample, skipped=skipped if job.skip_bad else None)
    return record, str(chain.device), dict(skipped), job.nano_version or source.version.name


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Fixed intra-op threads while a partition runs: CPU results depend (in the last bit) on their number."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _extract_task(part: Partition, job: _Job) -> dict[str, Any]:
    """Training rows of one partition, written as a Parquet table with its extraction report."""
    from flashsim.datasets import Dataset, ExtractionReport, extract_range
    from flashsim.io import open_source
    from flashsim.unit import load_unit

    started = time.perf_counter()
    unit = _cached(("unit", job.units, job.fingerprint), lambda: load_unit(job.units[0], require_trained=False))
    report = ExtractionReport()
    table = extract_range(unit, open_source(part.path, part.tree), part.file_index, part.entry_start,
                          part.entry_stop, report)
    Dataset(table, report).save(Path(job.output_dir) / part.output)
    return _finish(job, part, report.events, started, report=asdict(report))


# ---- execution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Final:
    """The message of a FlashsimError raised by a task, returned as its result so that dask does not retry it."""

    message: str


def _final_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a dask task: a FlashsimError (bad input, unit or setting) is deterministic, so it
    comes back as a result, failing the call at once; anything else raises and is retried."""
    try:
        return fn(*args)
    except FlashsimError as exc:
        return _Final(str(exc))


def _map(fn: Callable[..., Any], calls: list[tuple], client: Client | None) -> Iterator[tuple[int, Any]]:
    """(index, result or exception) as calls complete: in-process in order, or one dask task each.

    On dask, a call that raises a FlashsimError is attempted once; other errors are resubmitted
    ``RETRIES`` times, and the tasks of a killed worker rerun elsewhere (up to the scheduler's
    ``allowed-failures``)."""
    if client is None:
        for index, args in enumerate(calls):
            stop_if_signalled()
            try:
                yield index, fn(*args)
            except Exception as exc:  # noqa: BLE001 - reported as a failure of this call
                yield index, exc
        return
    from distributed import as_completed

    futures = {client.submit(_final_errors, fn, *args, pure=False, retries=RETRIES): i for i, args in enumerate(calls)}
    for future in as_completed(futures):
        stop_if_signalled()
        index = futures.pop(future)
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001 - the task's error, KilledWorker, or a cancellation
            result = exc
        future.release()
        yield index, FlashsimError(result.message) if isinstance(result, _Final) else result


def _scan_inputs(inputs: Inputs, output_dir: Path, client: Client | None) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = [
        {"dataset": d, "path": str(p), "tree": t, "file_index": i} for i, (d, p, t) in enumerate(_input_files(inputs))
    ]
    previous = _previous_inputs(output_dir)
    todo = []
    for i, f in enumerate(files):
        stat = Path(f["path"]).stat()
        cached = previous.get((f["path"], f["tree"], stat.st_size, stat.st_mtime_ns))
        if cached:
            f.update({k: cached[k] for k in ("bytes", "mtime_ns", "sha256", "num_entries")})
        else:
            todo.append(i)
    for index, result in _map(_scan, [(files[i]["path"], files[i]["tree"]) for i in todo], client):
        f = files[todo[index]]
        if isinstance(result, BaseException):
            f.update({"bytes": Path(f["path"]).stat().st_size, "sha256": None, "num_entries": None,
                      "error": str(result) if isinstance(result, FlashsimError) else f"{type(result).__name__}: {result}"})
        else:
            f.update(result)
    return files


def _run(kind: str, task: Callable[[Partition, _Job], dict[str, Any]], inputs: Inputs, output_dir: PathLike,
         client: Client | None, seed: int, partition_size: int, suffix: str, settings: dict[str, Any],
         unit_names: Sequence[str], progress: Progress | None, job_args: dict[str, Any]) -> Manifest:
    from flashsim import __version__

    if partition_size <= 0:
        raise ConfigError(f"partition_size must be positive, got {partition_size}")
    started = time.perf_counter()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    units = [_unit_record(name) for name in unit_names]
    # units travel by absolute directory (workers must see the same filesystem, as for inputs and outputs)
    job = _Job(kind, str(output_dir), _digest_json([kind, __version__, settings, [u["sha256"] for u in units]]),
               tuple(u["path"] for u in units), **job_args)
    files = _scan_inputs(inputs, output_dir, client)
    failures = [{"input": f["path"], "what": "input file", "error": f["error"]} for f in files if f.get("error")]
    partitions = _plan(files, partition_size, seed, suffix)
    results: list[dict[str, Any] | None] = [_completed(job, p) for p in partitions]  # done markers of a rerun
    skipped = sum(r is not None for r in results)
    todo = [i for i, r in enumerate(results) if r is None]
    events_of = (lambda p: (p.entry_stop - p.entry_start) * job.oversample) if kind == "generate" else \
        (lambda p: p.entry_stop - p.entry_start)
    total_events = sum(events_of(p) for p in partitions)
    done_events = sum(events_of(partitions[i]) for i, r in enumerate(results) if r is not None)
    done = skipped
    if progress is not None:
        progress(done, len(partitions), done_events, total_events)
    workers = _worker_count(client)  # taken before and after the run: a scheduler may be tearing workers down at the end
    for index, result in _map(task, [(partitions[i], job) for i in todo], client):
        part = partitions[todo[index]]
        if isinstance(result, FlashsimError):  # bad input, unit or setting: attempted once, its message names it
            result = {"status": "failed", "error": str(result)}
        elif isinstance(result, BaseException):  # unexpected error, after retries (or a worker killed too often)
            result = {"status": "failed", "error": f"{part.path}: {type(result).__name__}: {result}"}
        results[todo[index]] = result
        done += 1
        done_events += events_of(part)
        if progress is not None:
            progress(done, len(partitions), done_events, total_events)
    for note in sorted({n for r in results if r for n in r.get("warnings", ())}):
        warnings.warn(f"{output_dir}: {note}", stacklevel=3)
    records = [_record(part, result, failures, Path(output_dir)) for part, result in zip(partitions, results)]
    report = _merged_report(records) if kind == "dataset" else None
    manifest = Manifest(output_dir / MANIFEST, kind, __version__, settings, units,
                        [{k: v for k, v in f.items() if k != "file_index"} for f in files], records, failures, report,
                        {"partitions": len(partitions), "skipped": skipped,
                         "ran": len(todo) - sum(r["status"] == "failed" for r in results if r),
                         "failed": len(failures), "seconds": round(time.perf_counter() - started, 3),
                         "workers": max(workers, _worker_count(client))})
    manifest.save()
    if failures:
        raise PartitionsFailed(failures, manifest)
    return manifest


def _merged_report(records: list[dict[str, Any]]) -> dict[str, Any]:
    from flashsim.datasets import ExtractionReport

    total = ExtractionReport()
    for record in records:
        if record["status"] == "done":
            total.add(ExtractionReport(**record["report"]))
    return asdict(total)


def _remove_stale_temporaries(output: Path) -> None:
    """Partial files left by a task that died mid-write (its retry wrote the real one)."""
    for tmp in output.parent.glob(f".{glob.escape(output.name)}.*tmp"):
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


# ---- public API -----------------------------------------------------------------------------------


def generate_partitions(
    chain_units: Sequence[str],
    inputs: Inputs,
    output_dir: PathLike,
    *,
    client: Client | None = None,
    seed: int = 0,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    format: str = "root",
    keep_gen: bool = False,
    oversample: int = 1,
    device: str = "cpu",
    precision: str = "float32",
    batch_size: int = 100_000,
    threads: int = 1,
    on_bad_input: str = "error",
    nano_version: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Run a chain on every partition of the inputs, one output file each, and write the manifest.

    ``inputs``: a path, a glob, a list of them, or a fileset (dict or ``.json``). ``client=None`` runs
    in-process; with a dask client, one task per partition. ``threads``: torch threads per task (fixed,
    since CPU results differ in the last bit with their number; scale out with workers). Raises :class:`PartitionsFailed` (after
    writing everything else and the manifest) when an input or partition failed. ``nano_version``: that of the
    output (default: each input's own). ``precision``: that of the coupling flows' conditioner networks
    (:data:`flashsim.models.PRECISIONS`).
    """
    from flashsim.io import format_of
    from flashsim.models import precision_dtype
    from flashsim.io.schema import nano_version as version_named

    if format not in ("root", "parquet"):
        format_of("x", format)  # raises the standard message
    if oversample < 1:
        raise InputError(f"oversample must be >= 1, got {oversample}")
    if on_bad_input not in ("error", "skip"):
        raise ConfigError(f"on_bad_input must be 'error' or 'skip', got {on_bad_input!r}")
    precision_dtype(precision)
    version = None if nano_version is None else version_named(nano_version).name
    settings = {"seed": seed, "partition_size": partition_size, "format": format, "keep_gen": keep_gen,
                "oversample": oversample, "device": device, "precision": precision, "batch_size": batch_size, "threads": threads,
                "on_bad_input": on_bad_input, "nano_version": version}
    units = [os.fspath(u) for u in chain_units]
    return _run("generate", _generate_task, inputs, output_dir, client, seed, partition_size,
                ".root" if format == "root" else ".parquet", settings, units, progress,
                {"device": device, "precision": precision, "batch_size": batch_size, "keep_gen": keep_gen, "oversample": oversample,
                 "format": format, "threads": threads, "skip_bad": on_bad_input == "skip", "nano_version": version})


def extract_partitions(
    unit: str | os.PathLike[str],
    inputs: Inputs,
    output_dir: PathLike,
    *,
    client: Client | None = None,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    progress: Progress | None = None,
) -> Manifest:
    """A unit's training table, one Parquet table per partition (rows identical to
    :func:`flashsim.datasets.extract` on the same files in the same order), and the manifest."""
    settings = {"partition_size": partition_size}
    manifest = _run("dataset", _extract_task, inputs, output_dir, client, 0, partition_size, ".parquet", settings,
                    [os.fspath(unit)], progress, {})
    if manifest.report and manifest.report["matched"] == 0:
        raise InputError(f"unit {manifest.units[0]['name']!r}: no row with a reco target in the inputs")
    return manifest


def merge_outputs(manifest_path: PathLike, output: PathLike | None = None) -> list[Path]:
    """One file per dataset from a complete manifest, partitions in order.

    Default ``<output_dir>/<dataset>.<ext>``; ``output`` names the file when there is one dataset,
    else the directory to write the per-dataset files to.
    """
    from flashsim.datasets import Dataset, ExtractionReport, load_dataset
    from flashsim.events import from_branches
    from flashsim.io import NanoAODWriter, open_source
    from flashsim.io.schema import WORKING_VERSION

    manifest = Manifest.load(manifest_path)
    if not manifest.complete:
        raise InputError(f"{manifest.path}: {len(manifest.failures)} partition(s) failed; rerun the command before merging")
    suffix = ".parquet" if manifest.kind == "dataset" or manifest.settings.get("format") == "parquet" else ".root"
    written = []
    for dataset in manifest.datasets:
        if output is None:
            target = manifest.path.parent / f"{dataset}{suffix}"
        elif len(manifest.datasets) == 1:
            target = Path(output)
        else:
            target = Path(output) / f"{dataset}{suffix}"
        parts = manifest.outputs(dataset)
        if manifest.kind == "dataset":
            import numpy as np

            tables = [load_dataset(p) for p in parts]
            report = ExtractionReport()
            for t in tables:
                report.add(t.report)
            report.sources = [{k: i[k] for k in ("path", "bytes", "sha256")} for i in manifest.inputs
                              if i["dataset"] == dataset]
            Dataset({k: np.concatenate([t.columns[k] for t in tables]) for k in tables[0].columns}, report).save(target)
        else:
            first = next(p for p in manifest.partitions if p["status"] == "done" and p["dataset"] == dataset and p["events"])
            with NanoAODWriter(target, manifest.settings["format"], version=first.get("nano_version", WORKING_VERSION)) as writer:
                for path in parts:
                    source = open_source(path)
                    writer.write(from_branches(source.read(source.select())))
        written.append(target)
    return written


@contextmanager
def cluster(workers: int | None = None, scheduler: str | None = None,
            log: Callable[[str], None] = print) -> Iterator[Client | None]:
    """A dask client: on an existing ``scheduler`` address, or on a new local cluster of ``workers``
    processes (one thread each); ``None`` (run in-process) when neither is given."""
    if scheduler is None and not workers:
        yield None
        return
    import importlib.util

    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            log(f"dask scheduler {scheduler}: {len(client.scheduler_info(n_workers=-1)['workers'])} workers, "
                f"dashboard {client.dashboard_link}")
            yield client
        return
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as local, Client(local) as client:
        note = "" if importlib.util.find_spec("bokeh") else " (install bokeh to serve it)"
        log(f"local dask cluster: {workers} worker processes, dashboard {client.dashboard_link}{note}")
        yield client
