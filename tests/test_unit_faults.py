"""Bad units: every file of a trained unit missing, truncated, bit-flipped, holding NaN or a pickle is refused
with an error naming the unit and the file; nothing is unpickled, nothing runs with a part missing."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from flashsim.errors import UnitError
from flashsim.unit import DIGESTS, UnitSpec, load_unit, unit_files, write_digests

UNITS = ("tinyjet", "tinyfake", "tinymet")


def _copy(trained_units, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_units[name], tmp_path / name))


@pytest.fixture(scope="module")
def unit_file_cases(trained_units) -> list[tuple[str, str]]:
    """(unit, file) for every file each kind of trained unit needs."""
    return [(unit, f) for unit in UNITS for f in unit_files(UnitSpec.load(Path(trained_units[unit]) / "unit.toml"))]


@pytest.mark.parametrize("damage", ["missing", "truncated", "bit-flipped", "emptied"])
def test_damaged_unit_files_are_refused(trained_units, unit_file_cases, damage: str, tmp_path: Path) -> None:
    assert len(unit_file_cases) >= 12
    for unit, name in unit_file_cases:
        directory = _copy(trained_units, unit, tmp_path / f"{damage}_{name}")
        path = directory / name
        data = path.read_bytes()
        if damage == "missing":
            path.unlink()
        elif damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "bit-flipped":
            flipped = bytearray(data)
            flipped[len(data) * 2 // 3] ^= 0x10
            path.write_bytes(bytes(flipped))
        else:
            path.write_bytes(b"")
        with pytest.raises(UnitError, match=rf"unit '{unit}'.*{name.replace('.', '[.]')}"):
            load_unit(directory)


def test_a_unit_without_digests_is_refused(trained_units, tmp_path: Path) -> None:
    directory = _copy(trained_units, "tinyjet", tmp_path)
    (directory / DIGESTS).unlink()
    with pytest.raises(UnitError, match=rf"unit 'tinyjet'.*no {DIGESTS}.*retrain"):
        load_unit(directory)


def test_nan_in_preprocessing_is_refused_even_with_matching_digests(trained_units, tmp_path: Path) -> None:
    directory = _copy(trained_units, "tinyjet", tmp_path)
    state = json.loads((directory / "preprocessing.json").read_text())
    state["targets"]["groups"][0]["chains"][0][-1]["state"]["std"] = float("nan")
    (directory / "preprocessing.json").write_text(json.dumps(state))  # json writes NaN
    write_digests(directory, UnitSpec.load(directory / "unit.toml"))
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*preprocessing.json.*NaN is not a number"):
        load_unit(directory)


def test_nan_weights_are_refused_even_with_matching_digests(trained_units, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    directory = _copy(trained_units, "tinyjet", tmp_path)
    state = load_file(str(directory / "model.safetensors"))
    first = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[first] = state[first].clone()
    state[first].view(-1)[0] = float("inf")
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "flashsim-model"})
    write_digests(directory, UnitSpec.load(directory / "unit.toml"))
    with pytest.raises(UnitError, match=rf"unit 'tinyjet'.*model.safetensors.*{first}.*NaN or infinity"):
        load_unit(directory)


class _Hostile:
    def __reduce__(self):
        return (Path.touch, (Path(_Hostile.sentinel),))


def test_a_pickle_in_place_of_the_weights_is_never_executed(trained_units, tmp_path: Path) -> None:
    directory = _copy(trained_units, "tinyjet", tmp_path)
    _Hostile.sentinel = str(tmp_path / "pwned")
    for name in ("model.safetensors", "efficiency.safetensors"):
        (directory / name).write_bytes(pickle.dumps({"weight": _Hostile()}))
    write_digests(directory, UnitSpec.load(directory / "unit.toml"))
    with pytest.raises(UnitError, match=r"unit 'tinyjet'.*cannot load weights"):
        load_unit(directory)
    assert not (tmp_path / "pwned").exists(), "the hostile pickle ran"
