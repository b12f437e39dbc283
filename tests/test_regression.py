"""Output recorded before the unit-shape refactor (issue 19): the default zoo chain on fixed refsim GEN
events and the training rows of each unit kind must come out the same after it.

Regenerate (only when a change of output is intended): ``python tests/test_regression.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

GOLDEN = Path(__file__).parent / "data" / "regression.npz"
CHAIN_FIELDS = {"Jet": ("pt", "eta", "phi", "mass", "btagDeepFlavB", "jetId", "genJetIdx", "chHEF"),
                "Muon": ("pt", "eta", "dxy", "sip3d", "genPartIdx", "tightId"), "MET": ("pt", "phi", "sumEt")}
TABLE_ROWS = 400  # first rows of each training table kept in the record


def chain_output() -> dict[str, np.ndarray]:
    """The default chain (zoo units, seed 1) on 30 refsim ttbar GEN events (seed 3), flattened with counts."""
    from flashsim.chain import DEFAULT_CHAIN, Chain
    from flashsim.refsim import DetectorParams, generate

    gen = ak.concatenate(list(generate("ttbar", 30, pileup=35.0, seed=3, gen_only=True, params=DetectorParams(pu_pool_size=200))))
    flash = Chain(list(DEFAULT_CHAIN)).run(gen, seed=1)
    out = {}
    for coll, fields in CHAIN_FIELDS.items():
        if flash[coll].ndim > 1:
            out[f"chain.n{coll}"] = ak.to_numpy(ak.num(flash[coll], axis=1))
        for field in fields:
            out[f"chain.{coll}_{field}"] = ak.to_numpy(ak.flatten(flash[coll][field], axis=None)).astype(np.float64)
    return out


def training_tables(units: dict[str, Path], synthetic_file: Path) -> dict[str, np.ndarray]:
    """The first rows of the training table of an object, an event and a multiplicity unit."""
    from flashsim.datasets import extract
    from flashsim.unit import load_unit

    out = {}
    for name, directory in sorted(units.items()):
        table = extract(load_unit(directory, require_trained=False), synthetic_file, step_size=1000).columns
        for column, values in table.items():
            out[f"table.{name}.{column}"] = np.asarray(values[:TABLE_ROWS], dtype=np.float64)
        out[f"table.{name}.rows"] = np.array([len(next(iter(table.values())))])
    return out


def _spec_units(root: Path) -> dict[str, Path]:
    from conftest import FAKE_UNIT, JET_UNIT, MET_UNIT, write_unit

    return {name: write_unit(root / name, text) for name, text in (("tinyjet", JET_UNIT), ("tinymet", MET_UNIT), ("tinyfake", FAKE_UNIT))}


def _compare(recorded: dict[str, np.ndarray], now: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert sorted(now) == sorted(recorded)
    for key, values in now.items():
        assert values.shape == recorded[key].shape, key
        np.testing.assert_allclose(values, recorded[key], rtol=rtol, atol=atol, err_msg=key)


def test_training_rows_unchanged(tmp_path: Path, synthetic_file: Path) -> None:
    recorded = {k: v for k, v in np.load(GOLDEN).items() if k.startswith("table.")}
    _compare(recorded, training_tables(_spec_units(tmp_path), synthetic_file))


def test_default_chain_output_unchanged() -> None:
    pytest.importorskip("pythia8mc")
    recorded = {k: v for k, v in np.load(GOLDEN).items() if k.startswith("chain.")}
    # sampled through float32 matrix products, whose last bits differ between CPUs' kernels (one jet's eta by
    # 1.4e-5 relative on another Xeon): a refactor that changes the physics moves far more than that
    _compare(recorded, chain_output(), rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import synthetic_events

    from flashsim.io import write_events

    with tempfile.TemporaryDirectory() as tmp:
        synthetic = write_events(synthetic_events(3000, seed=11), Path(tmp) / "synthetic.root")
        record = chain_output() | training_tables(_spec_units(Path(tmp)), synthetic)
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **record)
    print(f"wrote {GOLDEN}: {len(record)} arrays")
