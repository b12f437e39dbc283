"""``selection_redraws``: an object unit with efficiency redraws an object drawn outside its ``output_selection``
instead of dropping it (the efficiency model already holds the acceptance), deterministically per object."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

ak = pytest.importorskip("awkward")
pytest.importorskip("pythia8mc")

from flashsim.chain import Chain  # noqa: E402
from flashsim.errors import UnitError  # noqa: E402
from flashsim.locations import zoo_dir  # noqa: E402
from flashsim.unit import UnitSpec, load_unit  # noqa: E402

NAME = "electron_fromjet"
SPEC = (zoo_dir() / NAME / "unit.toml").read_text()
SELECTION = 'output_selection = "(pt > 5) & (abs(eta) < 2.5)"'
REDRAWS = "selection_redraws = 100"


@pytest.fixture(scope="module")
def jets() -> ak.Array:
    """GEN ttbar events with the flash jets electron_fromjet links to and the electrons of gen electrons and photons it sees."""
    from flashsim.refsim import DetectorParams, generate

    gen = ak.concatenate(list(generate("ttbar", 120, pileup=35.0, seed=6, gen_only=True, params=DetectorParams(pu_pool_size=200))))
    return Chain(["jet", "electron", "electron_fromphoton"]).run(gen, seed=1)


def _variant(tmp_path: Path, name: str, redraws: int) -> Path:
    """The zoo unit with a narrow selection (|eta| < 1: many draws outside) and ``redraws`` redraws."""
    directory = tmp_path / name
    shutil.copytree(zoo_dir() / NAME, directory)
    assert SPEC.count(SELECTION) == 1 and SPEC.count(REDRAWS) == 1
    text = SPEC.replace(SELECTION, 'output_selection = "(pt > 5) & (abs(eta) < 1.0)"').replace(REDRAWS, f"selection_redraws = {redraws}")
    (directory / "unit.toml").write_text(text)
    return directory


def _objects(events: ak.Array) -> set[tuple[int, float, float]]:
    """(event, pt, eta) of the unit's electrons (no gen partner)."""
    e = events.Electron[events.Electron.genPartIdx < 0]
    event = np.repeat(np.arange(len(e)), ak.to_numpy(ak.num(e)))
    return set(zip(event.tolist(), ak.to_numpy(ak.flatten(e.pt)).tolist(), ak.to_numpy(ak.flatten(e.eta)).tolist()))


def test_redrawn_objects_replace_dropped_ones_and_do_not_depend_on_batching(jets, tmp_path: Path) -> None:
    dropped = load_unit(_variant(tmp_path, "none", 0)).run(jets, seed=3)
    redrawing = load_unit(_variant(tmp_path, "some", 50))
    redrawn = redrawing.run(jets, seed=3)
    first, kept = _objects(dropped), _objects(redrawn)
    assert all(abs(eta) < 1.0 for _, _, eta in kept)
    # the objects drawn inside at once are the same; the redraws add those drawn outside at first
    assert first < kept and len(first) > 10
    # the same objects in batches of 7 (float32 sums in another order: equal to rounding)
    small = redrawing.run(jets, seed=3, batch_size=7).Electron
    assert ak.all(ak.num(small) == ak.num(redrawn.Electron))
    for field in ("pt", "eta", "phi"):
        assert np.allclose(ak.to_numpy(ak.flatten(small[field])), ak.to_numpy(ak.flatten(redrawn.Electron[field])), rtol=1e-5, atol=1e-5)


def test_attempts_drawn_in_one_call_equal_one_attempt_at_a_time(jets, tmp_path: Path) -> None:
    import torch

    from flashsim.events import flat
    from flashsim.expressions import parse
    from flashsim.kinds import _draw_accepted
    from flashsim.streams import RowNoise

    unit, cpu = load_unit(_variant(tmp_path, "some", 50)), torch.device("cpu")
    rows = unit.rows(jets)
    context = unit.context_array(unit.context_columns(jets, rows))
    refs = {k: np.asarray(flat(v), np.float64) for k, v in unit.reference_columns(jets, rows).items()}
    noise = RowNoise(np.arange(len(context), dtype=np.uint64) * np.uint64(7919))
    together = _draw_accepted(unit, context, noise, refs, cpu, 100_000)
    # the same attempts drawn one call each
    accepted = parse(unit.spec.output_selection or "", "test")
    alone = unit.target_pipeline.inverse(unit.draw(context, noise, cpu, 100_000), refs)
    outside = np.flatnonzero(~accepted(alone))
    first_outside, calls = len(outside), 0
    for attempt in range(1, 51):
        if not len(outside):
            break
        again = unit.draw(context[outside], noise.subset(outside).derive(f"selection redraw {attempt}"), cpu, 100_000)
        redrawn = unit.target_pipeline.inverse(again, {k: v[outside] for k, v in refs.items()})
        for name, values in redrawn.items():
            alone[name][outside] = values
        outside, calls = outside[~accepted(redrawn)], calls + 1
    assert first_outside > 20 and calls > 3  # rows needing several attempts
    assert accepted(together).sum() == accepted(alone).sum() > len(context) - first_outside  # the redraws kept some
    for name in alone:  # float32 products over other row counts: equal to rounding
        assert np.allclose(together[name], alone[name], rtol=1e-5, atol=1e-5), name


@pytest.mark.parametrize(("old", "new", "message"), [
    (SELECTION, 'output_selection = "(pt > 5) & (mass > 0)"', r"output_selection '\(pt > 5\) & \(mass > 0\)' reads \['mass'\], which are not target"),
    (SELECTION, "", r"selection_redraws = 100: needs an efficiency model and an output_selection"),
    ("efficiency = { hidden = 64, layers = 3 }", "", r"selection_redraws = 100: needs an efficiency model"),
    (REDRAWS, "selection_redraws = -1", r"selection_redraws"),
    ("output_rules = [\n", 'output_rules = [\n  { where = "pt > 100", columns = ["pt"], value = 100.0 },\n',
     r"reads \['pt'\], which output_rules set after the draw"),
])
def test_spec_refuses_redraws_it_cannot_honour(old: str, new: str, message: str) -> None:
    assert SPEC.count(old) == 1
    with pytest.raises(UnitError, match=message):
        UnitSpec.from_dict(tomllib.loads(SPEC.replace(old, new)))


def test_multiplicity_units_refuse_the_key() -> None:
    text = (zoo_dir() / "fakeelectron" / "unit.toml").read_text()
    line = next(line for line in text.splitlines() if line.startswith("output_selection"))
    with pytest.raises(UnitError, match=r"\['selection_redraws'\] are not used by multiplicity units"):
        UnitSpec.from_dict(tomllib.loads(text.replace(line, line + "\nselection_redraws = 5")))
