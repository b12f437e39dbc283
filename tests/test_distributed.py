"""Scale-out on dask: partitioned output identical to a local run, resume, faults, filesets, extraction."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from conftest import synthetic_events
from flashsim.datasets import extract, load_dataset
from flashsim.distributed import RETRIES, Manifest, PartitionsFailed, extract_partitions, generate_partitions, merge_outputs
from flashsim.errors import ConfigError
from flashsim.events import to_branches
from flashsim.io import read_events, write_events
from flashsim.unit import load_unit

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")

SIZES = {"a": 1200, "b": 900, "c": 700}  # 2800 events; partitions of 400 -> 3 + 3 + 2
PARTITION = 400


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gen")
    for i, (name, n) in enumerate(SIZES.items()):
        write_events(synthetic_events(n, seed=20 + i), directory / f"{name}.root")
    return directory


@pytest.fixture(scope="module")
def chain_units(trained_units) -> list[str]:
    return [str(trained_units[n]) for n in ("tinyjet", "tinyfake", "tinymet")]


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def reference(chain_units, gen_dir, tmp_path_factory) -> tuple[Manifest, ak.Array]:
    """The local, in-process run everything else must reproduce."""
    manifest = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path_factory.mktemp("ref"), seed=7,
                                   partition_size=PARTITION)
    return manifest, read_events(manifest.outputs())


def assert_same_events(a: ak.Array, b: ak.Array) -> None:
    ba, bb = to_branches(a), to_branches(b)
    assert sorted(ba) == sorted(bb)
    for name in ba:
        assert ak.array_equal(ba[name], bb[name]), f"branch {name} differs"


def test_local_run_writes_partitions_and_manifest(reference, gen_dir, chain_units) -> None:
    manifest, events = reference
    assert manifest.complete and manifest.events == sum(SIZES.values()) == len(events)
    saved = json.loads(manifest.path.read_text())
    assert saved["complete"] and saved["kind"] == "generate" and saved["settings"]["seed"] == 7
    assert [p["output"] for p in saved["partitions"][:4]] == ["default/a_0_400.root", "default/a_400_800.root",
                                                               "default/a_800_1200.root", "default/b_0_400.root"]
    assert {p["seed"] for p in saved["partitions"]} == {7}, "random numbers are keyed by the event, not the partition"
    assert all(len(i["sha256"]) == 64 and i["bytes"] > 0 for i in saved["inputs"])
    assert [u["name"] for u in saved["units"]] == ["tinyjet", "tinyfake", "tinymet"]
    assert all(len(u["sha256"]) == 64 for u in saved["units"])
    assert {"nJet", "Jet_pt", "MET_pt", "event"} <= set(to_branches(events)) | {"nJet"}
    # identical inputs elsewhere (another absolute directory) give identical output: identity is the content
    moved = gen_dir.parent / "moved"
    shutil.copytree(gen_dir, moved, dirs_exist_ok=True)
    again = generate_partitions(chain_units, [moved / "c.root", moved / "a.root", moved / "b.root"],
                                gen_dir.parent / "moved_out", seed=7, partition_size=PARTITION)
    by_name = {Path(p).name: p for p in again.outputs()}
    assert_same_events(read_events([by_name[p.name] for p in manifest.outputs()]), events)


def test_dask_two_workers_identical_to_local(reference, client, chain_units, gen_dir, tmp_path: Path) -> None:
    seen = []
    manifest = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, client=client, seed=7,
                                   partition_size=PARTITION, progress=lambda *a: seen.append(a))
    assert manifest.run["workers"] == 2 and manifest.run["ran"] == 8
    assert seen[0] == (0, 8, 0, 2800) and seen[-1] == (8, 8, 2800, 2800)
    assert_same_events(read_events(manifest.outputs()), reference[1])


def test_one_worker_identical_to_two(reference, chain_units, gen_dir, tmp_path: Path) -> None:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as one:
        manifest = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, client=one, seed=7,
                                       partition_size=PARTITION)
    assert_same_events(read_events(manifest.outputs()), reference[1])


def test_resume_redoes_only_missing_partitions(reference, chain_units, gen_dir, tmp_path: Path) -> None:
    class Interrupt(Exception):
        pass

    def crash_after_three(done: int, *_: int) -> None:
        if done == 3:
            raise Interrupt

    with pytest.raises(Interrupt):  # a crash mid-run: no manifest, three partitions on disk
        generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=7, partition_size=PARTITION,
                            progress=crash_after_three)
    assert not (tmp_path / "manifest.json").exists()
    resumed = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=7, partition_size=PARTITION)
    assert (resumed.run["skipped"], resumed.run["ran"]) == (3, 5)
    assert_same_events(read_events(resumed.outputs()), reference[1])

    outputs = resumed.outputs()
    outputs[1].unlink()  # a lost file
    outputs[4].write_bytes(outputs[4].read_bytes()[:200])  # a damaged one (its done marker no longer matches)
    (outputs[6].parent / f".{outputs[6].name}.1234abcd.tmp").write_bytes(b"partial")  # left by a killed task
    again = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=7, partition_size=PARTITION)
    assert (again.run["skipped"], again.run["ran"]) == (6, 2)
    assert_same_events(read_events(again.outputs()), reference[1])
    assert not list(tmp_path.rglob("*.tmp"))
    # other settings are not silently mixed with the old files
    other = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=8, partition_size=PARTITION)
    assert other.run["skipped"] == 0


def test_precision_is_a_setting_of_the_partitions(reference, chain_units, gen_dir, tmp_path: Path) -> None:
    """bfloat16 conditioners: the same events, MET within bfloat16 rounding of float32's; partitions of one precision are
    not reused by a run in the other; an unknown precision is refused before anything runs."""
    half = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=7, partition_size=PARTITION, precision="bfloat16")
    assert half.settings["precision"] == "bfloat16"
    events, single = read_events(half.outputs()), reference[1]
    assert ak.array_equal(events.event, single.event)
    met, met_single = ak.to_numpy(events.MET.pt), ak.to_numpy(single.MET.pt)
    assert not np.array_equal(met, met_single) and np.median(np.abs(met / met_single - 1)) < 1e-2
    again = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path, seed=7, partition_size=PARTITION)
    assert again.run["skipped"] == 0
    with pytest.raises(ConfigError, match="'float16'"):
        generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path / "other", precision="float16")
    assert not (tmp_path / "other").exists()


def test_corrupt_input_fails_clearly_and_rerun_completes(chain_units, gen_dir, client, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(gen_dir, inputs)
    good = (inputs / "b.root").read_bytes()
    (inputs / "b.root").write_bytes(good[: len(good) // 2])  # truncated: opens, but its baskets are cut
    out = tmp_path / "out"
    with pytest.raises(PartitionsFailed, match=r"b\.root \(entries 0-400\): cannot read entries 0-400") as failed:
        generate_partitions(chain_units, str(inputs / "*.root"), out, client=client, seed=7, partition_size=PARTITION)
    manifest = Manifest.load(out / "manifest.json")
    assert not manifest.complete and failed.value.failures[0]["input"].endswith("b.root")
    assert manifest.events == SIZES["a"] + SIZES["c"] and len(manifest.outputs()) == 5
    with pytest.raises(Exception, match="failed; rerun"):
        merge_outputs(manifest.path)
    (inputs / "b.root").write_bytes(good)  # fixed
    fixed = generate_partitions(chain_units, str(inputs / "*.root"), out, client=client, seed=7, partition_size=PARTITION)
    assert fixed.complete and (fixed.run["skipped"], fixed.run["ran"]) == (5, 3)
    assert fixed.events == sum(SIZES.values())


def test_damaged_baskets_fail_their_partitions_only(chain_units, gen_dir, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(gen_dir / "a.root", inputs / "a.root")
    data = bytearray((gen_dir / "c.root").read_bytes())
    data[len(data) // 3: len(data) // 3 + 4000] = bytes(4000)  # opens, but some baskets are garbage
    (inputs / "c.root").write_bytes(bytes(data))
    with pytest.raises(PartitionsFailed, match=r"c\.root") as failed:
        generate_partitions(chain_units, str(inputs / "*.root"), tmp_path / "out", seed=7, partition_size=PARTITION)
    assert {f["input"] for f in failed.value.failures} == {str(inputs / "c.root")}
    assert failed.value.manifest.events >= SIZES["a"]


@pytest.mark.slow
def test_worker_killed_mid_run_every_event_once(chain_units, gen_dir, tmp_path: Path) -> None:
    small = 100  # 28 short tasks, so that a worker is always busy when killed
    local = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path / "local", seed=3, partition_size=small)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        before = c.run(os.getpid)
        killed: list[int] = []

        def kill_one(done: int, *_: int) -> None:
            if done >= 4 and not killed:
                busy = [address for address, keys in c.processing().items() if keys]
                if busy:  # a worker with a task in hand
                    killed.append(before[busy[0]])
                    os.kill(killed[0], signal.SIGKILL)

        manifest = generate_partitions(chain_units, str(gen_dir / "*.root"), tmp_path / "dask", client=c, seed=3,
                                       partition_size=small, progress=kill_one)
        assert killed and killed[0] not in c.run(os.getpid).values(), "the nanny restarted the killed worker"
    events = read_events(manifest.outputs())
    assert manifest.complete and len(events) == manifest.events == sum(SIZES.values())
    assert_same_events(events, read_events(local.outputs()))
    assert not list((tmp_path / "dask").rglob("*.tmp"))


def test_fileset_json_datasets_and_merge(reference, chain_units, gen_dir, client, tmp_path: Path) -> None:
    fileset = tmp_path / "fileset.json"
    fileset.write_text(json.dumps({
        "/WJets/Run3/NANOAODSIM": {"files": {str(gen_dir / "a.root"): "Events", str(gen_dir / "b.root"): "Events"}},
        "ttbar": {"files": {str(gen_dir / "c.root"): "Events"}},
    }))
    manifest = generate_partitions(chain_units, str(fileset), tmp_path / "out", client=client, seed=7,
                                   partition_size=PARTITION, format="parquet")
    assert manifest.datasets == ["WJets_Run3_NANOAODSIM", "ttbar"]
    assert manifest.outputs("ttbar")[0] == tmp_path / "out" / "ttbar" / "c_0_400.parquet"
    merged = merge_outputs(manifest.path)
    assert [p.name for p in merged] == ["WJets_Run3_NANOAODSIM.parquet", "ttbar.parquet"]
    combined = ak.concatenate([read_events(p) for p in merged])
    assert_same_events(combined, reference[1])  # same files, same seeds: the dataset grouping changes nothing


def test_extract_partitions_identical_to_extract(trained_units, gen_dir, client, tmp_path: Path) -> None:
    unit = trained_units["tinyjet"]
    files = sorted(gen_dir.glob("*.root"))
    whole = extract(load_unit(unit, require_trained=False), files, step_size=333)
    manifest = extract_partitions(unit, files, tmp_path, client=client, partition_size=PARTITION)
    (merged,) = merge_outputs(manifest.path, tmp_path / "jet.parquet")
    table = load_dataset(merged)
    assert sorted(table.columns) == sorted(whole.columns)
    for name, values in whole.columns.items():
        np.testing.assert_array_equal(table.columns[name], values, err_msg=name)
    for key in ("events", "rows", "matched", "dangling_index"):
        assert getattr(table.report, key) == getattr(whole.report, key) == manifest.report[key]
    local = extract_partitions(unit, files, tmp_path / "local", partition_size=PARTITION)
    assert [p["events"] for p in local.partitions] == [p["events"] for p in manifest.partitions]


def test_cli_partitioned_generate_and_failure_exit(chain_units, gen_dir, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flashsim.cli import app

    runner = CliRunner()
    args = ["generate", "--chain", ",".join(chain_units), "--input", str(gen_dir / "*.root"), "--seed", "7",
            "--partition-size", "1000", "--device", "cpu", "--output-dir", str(tmp_path / "out"), "--merge"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "default.root").is_file() and (tmp_path / "out" / "manifest.json").is_file()
    assert len(read_events(tmp_path / "out" / "default.root")) == sum(SIZES.values())

    bad = tmp_path / "bad.root"
    bad.write_bytes(b"not a root file")
    result = runner.invoke(app, args[:4] + [str(gen_dir / "a.root"), "--input", str(bad)] + args[5:])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "1 partition(s) or input file(s) failed" in text and "bad.root" in text and "unreadable or truncated" in text

    result = runner.invoke(app, ["generate", "--chain", chain_units[0], "--input", str(bad), "--workers", "2",
                                 "--output", str(tmp_path / "x.root")])
    assert result.exit_code == 2 and "need --output-dir" in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize(("target", "error", "attempts"), [
    ("_simulate", "InputError", 1),  # a deterministic error in a partition: failed at once
    ("_scan", "InputError", 1),  # ... or in the scan of an input file
    ("_simulate", "RuntimeError", 1 + RETRIES),  # anything else is retried (as is a killed worker's task)
])
def test_deterministic_errors_are_not_retried(target, error, attempts, chain_units, gen_dir, client,
                                              tmp_path: Path) -> None:
    from collections import Counter

    from typer.testing import CliRunner

    from flashsim.cli import app

    log = tmp_path / "attempts.txt"

    def inject(name: str, kind: str, log: str) -> None:  # runs on each worker: c.root fails in `name`
        import flashsim.distributed as d
        import flashsim.errors

        original = getattr(d, name)
        exc_type = getattr(flashsim.errors, kind, RuntimeError)

        def failing(*args):
            path = getattr(args[0], "path", args[0])
            if not str(path).endswith("c.root"):
                return original(*args)
            with open(log, "a") as fh:
                fh.write(f"{getattr(args[0], 'entry_start', 'scan')}\n")
            raise exc_type(f"{path}: injected {kind}")

        failing.original = original
        setattr(d, name, failing)

    def restore(name: str) -> None:
        import flashsim.distributed as d

        setattr(d, name, getattr(d, name).original)

    client.run(inject, target, error, str(log))
    try:
        result = CliRunner().invoke(app, [
            "generate", "--chain", ",".join(chain_units), "--input", str(gen_dir / "a.root"), "--input",
            str(gen_dir / "c.root"), "--seed", "7", "--partition-size", str(PARTITION), "--device", "cpu",
            "--scheduler", client.scheduler.address, "--output-dir", str(tmp_path / "out")])
    finally:
        client.run(restore, target)
    expected = {"scan": attempts} if target == "_scan" else {"0": attempts, "400": attempts}  # c.root: 700 events
    assert Counter(log.read_text().split()) == expected
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and f"injected {error}" in text and "manifest (incomplete)" in text
    manifest = Manifest.load(tmp_path / "out")
    assert manifest.events == SIZES["a"] and len(manifest.failures) == len(expected)  # the rest is written
