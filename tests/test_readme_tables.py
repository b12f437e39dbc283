"""benchmarks/readme_tables.py writes the figures of a bench_units run between the README's markers, and only there."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "readme_tables.py"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_the_benchmark_record_and_nothing_else_changes(tables, tmp_path: Path, monkeypatch) -> None:
    per_seed = {"11": {"Muon median R": 1.007, "Jet AUC": 0.534, "MET corr flash": -0.158},
                "12": {"Muon median R": 1.005, "Jet AUC": 0.543, "MET corr flash": -0.160}}
    record = {"events": 10000, "seeds": [11, 12], "per_seed": per_seed,
              "speed": {"chain events/s": 1500.0, "refsim detector events/s": 125.0, "threads": 2}}
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tables.BEGIN}\nold figures\n{tables.END}\noutro\n")
    monkeypatch.setattr(sys, "argv", ["readme_tables.py", str(figures), "--readme", str(readme)])
    tables.main()
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{tables.END}\noutro\n") and "old figures" not in text
    assert "| muon | 1.00–1.01 |" in text and "0.534–0.543" in text and "−0.160–−0.158" in text
    assert "10,000 held-out events" in text and "12× the refsim" in text
    assert tables.span(per_seed, "absent") == "—"
