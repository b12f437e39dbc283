"""The ``flashsim`` command's error contract: an error the user can fix is one ``error:`` line and exit 1,
a usage error exit 2, ``--debug`` (or FLASHSIM_DEBUG=1) the full traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import synthetic_events
from flashsim.chain import Chain
from flashsim.cli import app
from flashsim.errors import InputError, UnitError
from flashsim.io import read_events, write_events

pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, **kwargs) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], **kwargs)
    return result.exit_code, result.output


def assert_one_error_line(code: int, output: str, *names: str) -> None:
    """Exit 1, the output ends in one ``error:`` line that names each of ``names``, no traceback
    (lines before it are the command's progress)."""
    assert code == 1, output
    lines = output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], output
    assert "Traceback" not in output
    for name in names:
        assert name in errors[0], (name, output)


@pytest.fixture(scope="module")
def gen_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "gen.root"
    write_events(synthetic_events(200, seed=5), path)
    return path


def test_missing_input_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.root"
    assert_one_error_line(*run("generate", "--chain", "muon", "-i", missing, "-o", tmp_path / "out.root"), str(missing))
    assert not (tmp_path / "out.root").exists()


def test_input_that_is_not_root(tmp_path: Path) -> None:
    bad = tmp_path / "text.root"
    bad.write_text("this is not a ROOT file\n" * 3)
    code, output = run("generate", "--chain", "muon", "-i", bad, "-o", tmp_path / "out.root")
    assert_one_error_line(code, output, str(bad), "not a ROOT file")


def test_input_that_is_a_directory(tmp_path: Path) -> None:
    code, output = run("generate", "--chain", "muon", "-i", tmp_path, "-o", tmp_path / "out.root")
    assert_one_error_line(code, output, str(tmp_path), "is a directory")


def test_unknown_unit_is_named(gen_file: Path, tmp_path: Path) -> None:
    code, output = run("generate", "--chain", "nosuchunit", "-i", gen_file, "-o", tmp_path / "out.root")
    assert_one_error_line(code, output, "'nosuchunit'", "not found")


def test_missing_collection_names_file_unit_and_collection(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(50)
    path = write_events(events[[f for f in events.fields if f != "GenJet"]], tmp_path / "nogenjet.root")
    code, output = run("generate", "--chain", trained_units["tinyjet"], "-i", path, "-o", tmp_path / "out.root")
    assert_one_error_line(code, output, str(path), "'tinyjet'", "'GenJet'")
    assert not (tmp_path / "out.root").exists()


def test_missing_field_names_file(trained_units, tmp_path: Path) -> None:
    events = synthetic_events(50)
    events = ak.with_field(events, events.GenJet[["pt", "phi", "mass", "hadronFlavour"]], "GenJet")
    path = write_events(events, tmp_path / "noeta.root")
    code, output = run("generate", "--chain", trained_units["tinyjet"], "-i", path, "-o", tmp_path / "out.root")
    assert_one_error_line(code, output, str(path), "'tinyjet'", "'eta'")


def test_output_onto_a_directory_or_an_input(trained_units, gen_file: Path, tmp_path: Path) -> None:
    unit = trained_units["tinyjet"]
    (tmp_path / "taken").mkdir()
    code, output = run("generate", "--chain", unit, "-i", gen_file, "-o", tmp_path / "taken")
    assert_one_error_line(code, output, str(tmp_path / "taken"), "directory")
    before = gen_file.read_bytes()
    code, output = run("generate", "--chain", unit, "-i", gen_file, "-o", gen_file)
    assert_one_error_line(code, output, str(gen_file), "also an input")
    assert gen_file.read_bytes() == before
    (tmp_path / "file").write_text("")
    code, output = run("generate", "--chain", unit, "-i", gen_file, "-o", tmp_path / "file" / "out.root")
    assert_one_error_line(code, output, str(tmp_path / "file"), "cannot create its directory")


def test_generate_takes_the_precision(trained_units, gen_file: Path, tmp_path: Path) -> None:
    code, output = run("generate", "--chain", trained_units["tinyjet"], "-i", gen_file, "-o", tmp_path / "out.root",
                       "--precision", "bfloat16")
    assert code == 0, output
    assert "bfloat16 conditioners" in output and len(read_events(tmp_path / "out.root")) == 200
    code, output = run("generate", "--chain", "muon", "-i", gen_file, "-o", tmp_path / "out.root", "--precision", "fp16")
    assert code == 2 and "'fp16' is not one of" in output, output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    out = ["-o", tmp_path / "out.root"]
    for args in (["generate", "-i", "x.root", *out],  # missing --chain
                 ["generate", "--chain", "muon", "-i", "x.root", "--no-such-option", *out],
                 ["generate", "--chain", "muon", "-i", "x.root", "--batch-size", "0", *out],
                 ["generate", "--chain", "muon", "-i", "x.root", "--seed", "-1", *out],
                 ["generate", "--chain", "muon", "-i", "x.root", "--format", "xyz", *out],
                 ["generate", "--chain", "muon", "-i", "x.root", "--device", "tpu", *out],
                 ["generate", "--chain", "muon", "-i", "x.root", "--precision", "float16", *out],
                 ["generate", "--chain", " , ", "-i", "x.root", *out],
                 ["train", "muon", "--epochs", "0"],
                 ["no-such-command"]):
        code, output = run(*args)
        assert code == 2, (args, output)
        assert "Traceback" not in output


def test_debug_reraises(tmp_path: Path) -> None:
    args = ["generate", "--chain", "muon", "-i", tmp_path / "nowhere.root", "-o", tmp_path / "out.root"]
    for invocation in (["--debug", *args], [*args, "--debug"]):
        result = CliRunner().invoke(app, [str(a) for a in invocation])
        assert isinstance(result.exception, InputError) and "nowhere.root" in str(result.exception)
    result = CliRunner().invoke(app, [str(a) for a in args], env={"FLASHSIM_DEBUG": "1"})
    assert isinstance(result.exception, InputError)
    result = CliRunner().invoke(app, ["--debug", "generate", "--chain", "nosuchunit", "-i", __file__, "-o", "x.root"])
    assert isinstance(result.exception, (InputError, UnitError))


def test_real_process_prints_one_line_or_the_traceback(tmp_path: Path) -> None:
    """The installed entry point's behaviour, in a real process (stderr, exit status)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("FLASHSIM_DEBUG", None)
    args = [sys.executable, "-m", "flashsim.cli", "generate", "--chain", "muon", "-i", str(tmp_path / "nowhere.root"),
            "-o", str(tmp_path / "out.root")]
    plain = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.strip().splitlines() == [f"error: input file {str(tmp_path / 'nowhere.root')!r} does not exist"]
    debug = subprocess.run(args + ["--debug"], capture_output=True, text=True, env=env, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "flashsim.errors.InputError" in debug.stderr


def test_sub_commands_share_the_handler(tmp_path: Path) -> None:
    """refsim and validate: a missing file (an OS error) and a bad config file are one line, exit 1."""
    pytest.importorskip("fastjet")
    missing = tmp_path / "nowhere.toml"
    code, output = run("refsim", "--params", missing, "-n", "1", "-o", tmp_path / "ref.root")
    assert_one_error_line(code, output, str(missing), "No such file or directory")
    card = tmp_path / "det.toml"
    card.write_text("trk_eff_plateu = 0.9\n")
    code, output = run("refsim", "--params", card, "-n", "1", "-o", tmp_path / "ref.root")
    assert_one_error_line(code, output, str(card), "'trk_eff_plateu'", "did you mean 'trk_eff_plateau'")
    sample = write_events(synthetic_events(20), tmp_path / "sample.parquet")
    thresholds = tmp_path / "thr.toml"
    thresholds.write_text("ratio_max = \n")
    code, output = run("validate", "--flash", sample, "--reference", sample, "--collections", "Jet", "--out",
                       tmp_path / "rep", "--thresholds", thresholds)
    assert_one_error_line(code, output, str(thresholds))
    code, output = run("refsim", "--process", "nosuch", "-o", tmp_path / "ref.root")
    assert code == 2 and "nosuch" in output


def test_units_lists_every_registry_and_prints_the_schemas() -> None:
    import json

    import flashsim.features
    import flashsim.kinds
    import flashsim.models
    import flashsim.optim
    import flashsim.transforms  # noqa: F401
    from flashsim.registry import REGISTRIES

    listed = CliRunner().invoke(app, ["units", "--list-kinds"], terminal_width=300)
    assert listed.exit_code == 0, listed.output
    for family, registry in REGISTRIES.items():
        assert family in listed.output
        for name in registry.names():
            assert name in listed.output, (family, name)
    schema = json.loads(CliRunner().invoke(app, ["units", "--schema", "unit"]).output)
    assert {"context", "targets", "model", "multiplicity"} <= set(schema["properties"]) and schema["additionalProperties"] is False
    recipe = json.loads(CliRunner().invoke(app, ["units", "--schema", "recipe"]).output)
    assert {"data", "training", "optimizer"} <= set(recipe["properties"])


def test_select_takes_run_lumi_event(tmp_path: Path) -> None:
    bad = CliRunner().invoke(app, ["generate", "--chain", "jet", "--input", "x.root", "--output", str(tmp_path / "o.root"),
                                   "--select", "1:2"])
    assert bad.exit_code == 2 and "RUN:LUMI:EVENT" in bad.output
    parts = CliRunner().invoke(app, ["generate", "--chain", "jet", "--input", "x.root", "--output-dir", str(tmp_path / "d"),
                                     "--select", "1:2:3"])
    assert parts.exit_code == 2 and "--select" in parts.output


SLOW = pytest.mark.slow  # each case runs generate two or three times in subprocesses (~20 s)


def _interrupt(args: list[str], started: Callable[[], bool], signum: str) -> int:
    """Run ``args``, send it ``signum`` once ``started()`` holds, check its exit (128 + signal, or killed) and that no
    traceback was printed; the signal's number."""
    import signal
    import time

    sig = getattr(signal, signum)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not started() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it was interrupted"
    proc.send_signal(sig)
    assert proc.wait(60) == (-sig if sig == signal.SIGKILL else 128 + sig)
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    return sig


@pytest.mark.parametrize("signum", [pytest.param("SIGINT", marks=SLOW), "SIGTERM", "SIGKILL"])
def test_a_signal_mid_write_leaves_no_file_and_a_rerun_cleans_killed_temporaries(trained_units, tmp_path: Path, signum: str) -> None:
    import signal

    gen = write_events(synthetic_events(20_000, seed=4), tmp_path / "gen.root")
    out = tmp_path / "out.root"
    args = [sys.executable, "-m", "flashsim.cli", "generate", "--chain", f"{trained_units['tinyjet']},{trained_units['tinymet']}",
            "--input", str(gen), "--output", str(out), "--step-size", "200", "--jobs", "1"]
    sig = _interrupt(args, lambda: bool(list(tmp_path.glob(".out.root.*.tmp"))), signum)
    assert not out.exists(), "no output from an interrupted run"
    left = list(tmp_path.glob(".out.root.*"))
    assert (len(left) == 1) if sig == signal.SIGKILL else not left, "only a killed run leaves its temporary"
    done = subprocess.run(args[:-4] + ["--step-size", "5000", "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.exists() and not list(tmp_path.glob(".out.root.*")), "the next run removes a killed run's temporary"


USAGE_ERRORS = [  # every command, a bad option value or combination: exit 2, no traceback
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--batch-size", "0"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--step-size", "-5"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--seed", "-1"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--oversample", "0"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--format", "csv"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--device", "gpu0"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--jobs", "0"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--on-bad-input", "ignore"],
    ["generate", "--chain", ",", "--input", "x.root", "--output", "o.root"],
    ["generate", "--chain", "jet", "--input", "x.root"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--output-dir", "d"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--workers", "2"],
    ["generate", "--chain", "jet", "--input", "x.root", "--output", "o.root", "--bogus"],
    ["dataset", "jet", "--input", "x.root", "--output", "t.parquet", "--max-events", "0"],
    ["dataset", "jet", "--input", "x.root", "--output-dir", "d", "--partition-size", "0"],
    ["train", "jet", "--epochs", "0"],
    ["train", "jet", "--batch-size", "-1"],
    ["train", "jet", "--device", "tpu"],
    ["validate", "--flash", "f.root", "--reference", "r.root", "--out", "o", "--splits", "0"],
    ["validate", "--flash", "f.root", "--out", "o"],
    ["refsim", "--process", "wjets", "--events", "10", "--format", "csv", "-o", "x.root"],
    ["units", "--schema", "spec"],
    ["nosuchcommand"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a[:1] + a[-2:]) for a in USAGE_ERRORS])
def test_a_bad_option_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bad_training_data_is_a_clear_error(trained_units, tmp_path: Path) -> None:
    from conftest import JET_UNIT, write_unit

    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    table = tmp_path / "table.parquet"
    table.write_bytes(b"PAR1" + b"\x00" * 100)  # a truncated Parquet table
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'unit = "{unit_dir}"\n[data]\ndataset = "{table}"\n[training]\nepochs = 1\ndevice = "cpu"\n')
    assert_one_error_line(*run("train", "tinyjet", "--recipe", recipe), "table.parquet")
    recipe.write_text(f'unit = "{unit_dir}"\n[data]\ninputs = ["{tmp_path}/nothing_*.root"]\n[training]\nepochs = 1\n')
    assert_one_error_line(*run("train", "tinyjet", "--recipe", recipe), "nothing_*.root")
    recipe.write_text(f'unit = "{tmp_path}/no_such_unit"\n[data]\ninputs = ["x.root"]\n')
    assert_one_error_line(*run("train", "tinyjet", "--recipe", recipe), "no_such_unit")


@pytest.mark.parametrize("signum", [pytest.param("SIGINT", marks=SLOW), "SIGTERM", pytest.param("SIGKILL", marks=SLOW)])
def test_a_signal_mid_partitioned_run_leaves_whole_partitions_only_and_a_rerun_completes(trained_units, tmp_path: Path,
                                                                                       signum: str) -> None:
    import signal

    from flashsim.distributed import Manifest

    gen = write_events(synthetic_events(6_000, seed=4), tmp_path / "gen.root")
    out = tmp_path / "parts"
    # 120 partitions: on an idle 2-core machine they keep coming for ~7 s after the first is done (60 gave ~4 s, and a
    # signal after the last, while the interpreter shuts down, ends it by the signal's default action: a race of the test)
    args = [sys.executable, "-m", "flashsim.cli", "generate", "--chain", f"{trained_units['tinyjet']},{trained_units['tinymet']}",
            "--input", str(gen), "--output-dir", str(out), "--partition-size", "50"]
    sig = _interrupt(args, lambda: bool(list(out.rglob(".*.done.json"))), signum)
    assert not (out / "manifest.json").exists(), "an interrupted run writes no manifest"
    files = [f for f in out.rglob("*.root") if not f.name.startswith(".")]
    assert files, "partitions finished before the signal stay"
    for f in files:  # every visible partition file is whole: it has its done marker and all its events
        marker = json.loads(f.with_name(f".{f.name}.done.json").read_text())
        assert len(read_events(f)) == marker["events"] > 0
    if sig != signal.SIGKILL:
        assert not [f for f in out.rglob("*.tmp")], "a handled signal removes the partition in progress"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = Manifest.load(out / "manifest.json")
    assert manifest.run["skipped"] >= len(files) and manifest.events == 6_000
    assert not list(out.rglob("*.tmp")), "the rerun removes temporaries of killed runs"
    whole = read_events(sorted(out.rglob("*.root"), key=lambda f: int(f.stem.split("_")[-2])))
    Chain([trained_units["tinyjet"], trained_units["tinymet"]]).generate(gen, tmp_path / "one.root", seed=0)  # the CLI default
    straight = read_events(tmp_path / "one.root")
    # the same events and jets; floats to float32 rounding (matrix products differ in the last bit with the rows' blocking)
    assert ak.array_equal(ak.num(whole.Jet), ak.num(straight.Jet))
    assert np.allclose(ak.to_numpy(ak.flatten(whole.Jet.pt)), ak.to_numpy(ak.flatten(straight.Jet.pt)), rtol=1e-5)
    assert np.allclose(ak.to_numpy(whole.MET.pt), ak.to_numpy(straight.MET.pt), rtol=1e-5)


@pytest.mark.parametrize("suffix", ["root", "parquet"])
def test_a_disk_that_refuses_more_bytes_is_a_clear_error_and_leaves_nothing(trained_units, tmp_path: Path, suffix: str) -> None:
    """The output's filesystem stops taking bytes mid-write (RLIMIT_FSIZE: the kernel refuses writes past 200 kB, as a full disk does)."""
    import resource
    import signal

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write then fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    gen = write_events(synthetic_events(20_000, seed=4), tmp_path / "gen.root")  # written before the limit applies
    out = tmp_path / f"out.{suffix}"
    args = [sys.executable, "-m", "flashsim.cli", "generate", "--chain", f"{trained_units['tinyjet']},{trained_units['tinymet']}",
            "--input", str(gen), "--output", str(out), "--jobs", "1", "--keep-gen"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "File too large" in result.stderr, result.stderr
    assert not out.exists() and not list(tmp_path.glob(f".out.{suffix}*")), "no output and no temporary"


def test_train_logs_a_line_per_epoch_where_its_output_is_not_a_terminal(tmp_path: Path, synthetic_file: Path) -> None:
    """A batch job's log shows the training's progress (a progress bar is not drawn there)."""
    from conftest import JET_UNIT, write_recipe, write_unit

    unit_dir = write_unit(tmp_path / "u", JET_UNIT)
    recipe = write_recipe(tmp_path / "r.toml", unit_dir, str(synthetic_file), epochs=3)
    result = subprocess.run([sys.executable, "-m", "flashsim.cli", "train", "tinyjet", "--recipe", str(recipe)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split()[3] for line in lines if line.startswith("tinyjet model: epoch ")] == ["1/3", "2/3", "3/3"], result.stderr
    assert [line.split()[3] for line in lines if line.startswith("tinyjet efficiency: epoch ")] == ["1/2", "2/2"], result.stderr
    assert all(" val " in line and "samples/s" in line for line in lines if ": epoch " in line)
