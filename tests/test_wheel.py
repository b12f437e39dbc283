"""The built wheel carries the unit zoo: installed in a fresh venv, outside the source tree, it runs the default chain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TORCH_PIN = "torch==2.13.0"  # the CPU build on local disk; an unpinned torch pulls a multi-GB CUDA build


def _run(args: list[str | Path], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_default_chain(tmp_path: Path) -> None:
    pytest.importorskip("pythia8mc")
    import awkward as ak
    import uproot

    from flashsim.chain import DEFAULT_CHAIN
    from flashsim.io import write_events
    from flashsim.refsim import DetectorParams, generate

    # build from a copy of the sources, so that no build/ or egg-info lands in the checkout (and none stale gets in)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "flashsim", src / "flashsim", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "checkpoint_*.pt", ".*"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", src], 600)
    (wheel,) = (tmp_path / "dist").glob("flashsim-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], 300)
    python, flashsim_cli = venv / "bin" / "python", venv / "bin" / "flashsim"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FLASHSIM_UNITS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([python, "-m", "pip", "install", "-q", wheel, TORCH_PIN], 1800, env=env)

    work = tmp_path / "work"  # a cwd with no flashsim/ in it
    work.mkdir()
    where = _run([python, "-c", "import flashsim, flashsim.locations as z; print(flashsim.__file__); print(z.zoo_dir())"], 300, env=env, cwd=work)
    module_file, zoo = (Path(line) for line in where.stdout.split())
    assert module_file.is_relative_to(venv) and zoo.is_relative_to(venv), where.stdout
    assert not module_file.is_relative_to(REPO) and {p.name for p in zoo.iterdir()} >= set(DEFAULT_CHAIN)
    specs = _run([python, "-c", "from flashsim.analysis import load_analysis as l; from flashsim.locations import analysis_names as n; "
                  "print(*[l(a).name for a in n()])"], 300, env=env, cwd=work)
    assert set(specs.stdout.split()) == {p.stem for p in (REPO / "flashsim" / "analyses").glob("*.toml")}

    gen = tmp_path / "gen.root"
    write_events(ak.concatenate(list(generate("ttbar", 100, pileup=35.0, seed=5, gen_only=True, params=DetectorParams(pu_pool_size=200)))), gen)
    out = tmp_path / "flash.root"
    _run([flashsim_cli, "generate", "--chain", "muon,jet,fakejet,met", "--input", gen, "--output", out, "--seed", "1"], 900, env=env, cwd=work)

    events = uproot.open(out)["Events"]
    branches = set(events.keys())
    assert {"nMuon", "Muon_pt", "Muon_genPartIdx", "nJet", "Jet_pt", "Jet_btagDeepFlavB", "MET_pt", "MET_phi"} <= branches
    assert events.num_entries == 100
    assert events["nJet"].array(library="np").sum() > 100 and events["nMuon"].array(library="np").sum() > 0
