"""Events/s of each generator input path (`flashsim gen`'s GenSource) beside Pythia's own rate, in one run.

    python benchmarks/bench_generators.py [--events 500]

- card: the shipped ZZ -> 4l card through GenSource (Pythia + refsim's GEN builder + pileup draw) vs Pythia alone
  generating the same card (``Generator.batch``).
- LHE: u u~ -> Z(mu mu) g events (the tests' writer) showered through GenSource vs Pythia alone showering them.
- HepMC3: Pythia ttbar events written as HepMC3 (the tests' converter), read back through GenSource, vs Pythia alone
  generating ttbar; and the same file through ``read_hepmc`` alone (pyhepmc's reader + the conversion to Pythia's
  record order, before the GEN builder).

One process (``GenSource.chunks(jobs=1)``); the machine's load average is printed beside the table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_generators import lhe_text, pythia_to_hepmc, write_hepmc, write_lhe  # noqa: E402

from flashsim.generators import GenSource, read_card  # noqa: E402
from flashsim.generators.hepmc import read_hepmc  # noqa: E402
from flashsim.refsim import Generator  # noqa: E402


def rate(n: int, run: Callable[[], int]) -> float:
    """Events/s of ``run``, which returns the events it made."""
    start = time.perf_counter()
    made = run()
    assert made == n, (made, n)
    return n / (time.perf_counter() - start)


def through_source(path: Path, n: int) -> Callable[[], int]:
    return lambda: sum(len(chunk) for chunk in GenSource(path, events=n, seed=5).chunks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    n = parser.parse_args().events
    work = Path(tempfile.mkdtemp(prefix="bench_generators_"))
    card = Path(str(files("flashsim") / "cards" / "zz_4l.cmnd"))
    lhe = write_lhe(work / "zg.lhe", lhe_text(n, seed=3))
    ttbar = Generator("ttbar", seed=3).batch(n)
    hepmc = write_hepmc(work / "ttbar.hepmc3", [pythia_to_hepmc(ttbar, k) for k in range(ttbar.n_events)])

    rows = [
        ("card (ZZ -> 4l)", rate(n, through_source(card, n)),
         rate(n, lambda: Generator.from_settings("zz", [("card", "Beams:eCM = 13600")] + read_card(card), "init").batch(n).n_events)),
        ("LHE (Z + g, shower)", rate(n, through_source(lhe, n)),
         rate(n, lambda: Generator.from_settings("lhe", [("lhe", "Beams:frameType = 4"), ("lhe", f"Beams:LHEF = {lhe}")],
                                                 "init").batch(n).n_events)),
        ("HepMC3 (ttbar, showered)", rate(n, through_source(hepmc, n)),
         rate(n, lambda: Generator("ttbar", seed=4).batch(n).n_events)),
        ("HepMC3 read only (read_hepmc)", rate(n, lambda: sum(b.events.n_events for b in read_hepmc(hepmc))), float("nan")),
    ]
    print(f"{n} events per path, 1 process, load average {os.getloadavg()[0]:.1f}\n")
    print("| input path | GenSource events/s | Pythia alone events/s |")
    print("|---|---|---|")
    for name, source_rate, pythia_rate in rows:
        pythia = "-" if math.isnan(pythia_rate) else f"{pythia_rate:,.0f}"
        print(f"| {name} | {source_rate:,.0f} | {pythia} |")


if __name__ == "__main__":
    main()
