"""A stop signal whose exception Python drops (raised while a finaliser runs) still stops the run at its next chunk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import synthetic_events
from flashsim.io import write_events

SCRIPT = """
import os, signal, sys
from flashsim.chain import Chain
from flashsim.interrupts import install_handlers

install_handlers()

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler's SystemExit is raised inside __del__, where Python drops it

Finaliser()
print("still running", flush=True)
Chain(sys.argv[1:3]).generate(sys.argv[3], sys.argv[4], step_size=500)
"""


def test_a_dropped_signal_stops_the_run_at_its_next_chunk_and_leaves_no_output(trained_units, tmp_path: Path) -> None:
    gen = write_events(synthetic_events(2_000, seed=4), tmp_path / "gen.root")
    out = tmp_path / "out.root"
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(trained_units["tinyjet"]), str(trained_units["tinymet"]),
                          str(gen), str(out)], capture_output=True, text=True, timeout=300)
    assert "Exception ignored" in run.stderr and "still running" in run.stdout, (run.stdout, run.stderr)
    assert run.returncode == 128 + 15, run.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.root*")), "no output and no temporary"
