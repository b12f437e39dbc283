"""Where units and training recipes are found.

The unit zoo (``flashsim/zoo/<name>/unit.toml`` plus weights), the training recipes
(``flashsim/recipes/<name>.toml``) and the analysis specs of ``flashsim validate --analysis``
(``flashsim/analyses/<name>.toml``) are package data: they ship in the wheel and are located with
:mod:`importlib.resources`, so a plain ``pip install flashsim`` has the same zoo as a checkout.

A unit given by name is looked up on the search path: the directories listed in the environment
variable ``FLASHSIM_UNITS`` (separated by :data:`os.pathsep`), then the packaged zoo. A user unit
named like a zoo unit therefore replaces it. A unit given as a directory (or its ``unit.toml``)
is used as it is.
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

from flashsim.errors import ConfigError, FlashsimError, InputError, UnitError
from flashsim.registry import suggest

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "UNITS_ENV", "DEFAULT_CHAIN", "RUN3_CHAIN", "zoo_dir", "recipes_dir", "unit_search_path", "zoo_unit_names", "find_units",
    "resolve_unit_dir", "recipe_names", "resolve_recipe", "analyses_dir", "analysis_names", "resolve_analysis",
]

UNITS_ENV = "FLASHSIM_UNITS"
# the zoo's default chain, in dependency order: the e/gamma units after the jets they link to; met conditions on
# the muons' and jets' mismeasurement (refsim's MET does not see the electrons' and photons', README), puppimet on met
DEFAULT_CHAIN = ("muon", "fakemuon", "jet", "fakejet", "electron", "electron_fromphoton", "electron_fromjet", "electron_fromjet2",
                 "fakeelectron", "photon", "photon_fromjet", "photon_fromelectron", "fakephoton", "met", "puppimet")
# the same with the Run-3 jets (PNet/UParT taggers, multiplicities for the v15 jet ID) for NanoAOD v12 and v15 output
RUN3_CHAIN = tuple({"jet": "jet_run3", "fakejet": "fakejet_run3"}.get(unit, unit) for unit in DEFAULT_CHAIN)

_extracted = ExitStack()  # package data that only exists inside an archive, extracted once per process
atexit.register(_extracted.close)


def _as_path(resource: Traversable) -> Path:
    if isinstance(resource, Path):  # an ordinary installation (wheel or editable): the files are on disk
        return resource
    return _extracted.enter_context(as_file(resource))  # a zipped package: a temporary copy


def zoo_dir() -> Path:
    """The packaged unit zoo: one folder per unit."""
    return _as_path(files("flashsim") / "zoo")


def recipes_dir() -> Path:
    """The packaged training recipes, ``<unit>.toml``."""
    return _as_path(files("flashsim") / "recipes")


def analyses_dir() -> Path:
    """The packaged analysis specs, ``<name>.toml``."""
    return _as_path(files("flashsim") / "analyses")


def unit_search_path() -> list[Path]:
    """Where unit names are looked up, in order: the ``FLASHSIM_UNITS`` directories, then the zoo."""
    user = [Path(entry).expanduser() for entry in os.environ.get(UNITS_ENV, "").split(os.pathsep) if entry.strip()]
    return [*user, zoo_dir()]


def _units_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if (p / "unit.toml").is_file())


def find_units() -> dict[str, Path]:
    """Every unit on the search path by name, with the directory a name resolves to (the first one found)."""
    found: dict[str, Path] = {}
    for directory in unit_search_path():
        for unit in _units_in(directory):
            found.setdefault(unit.name, unit)
    return dict(sorted(found.items()))


def zoo_unit_names() -> list[str]:
    """The names that resolve to a unit: the ``FLASHSIM_UNITS`` units and the packaged zoo's."""
    return list(find_units())


def resolve_unit_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """A unit directory from a directory (or its ``unit.toml``), else a name on :func:`unit_search_path`."""
    path = Path(name_or_path)
    if (path / "unit.toml").is_file():
        return path
    if path.name == "unit.toml" and path.is_file():
        return path.parent
    search = unit_search_path()
    for directory in search:
        candidate = directory / str(name_or_path)
        if (candidate / "unit.toml").is_file():
            return candidate
    known = zoo_unit_names()
    where = ", ".join(str(d) for d in search)
    raise UnitError(
        f"unit {str(name_or_path)!r} not found: not a directory with unit.toml, nor a unit on the search path "
        f"({UNITS_ENV} directories, then the zoo): {where}; known units: {', '.join(known) or 'none'}"
        f"{suggest(str(name_or_path), known)}"
    )


def _toml_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def _resolve_toml(path_or_name: str | os.PathLike[str], directory: Path, what: str, error: type[FlashsimError]) -> Path:
    """A file path as it is, else the packaged ``directory/<name>.toml``; ``error`` lists the known names."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    packaged = directory / f"{path_or_name}.toml"
    if packaged.is_file():
        return packaged
    known = _toml_names(directory)
    raise error(
        f"no {what} {str(path_or_name)!r}: not a file, nor a {what} in {directory}; "
        f"known {what}s: {', '.join(known) or 'none'}{suggest(str(path_or_name), known)}"
    )


def recipe_names() -> list[str]:
    """The packaged training recipes by unit name."""
    return _toml_names(recipes_dir())


def resolve_recipe(path_or_name: str | os.PathLike[str]) -> Path:
    """A training recipe from a file path, else the packaged ``recipes/<name>.toml``."""
    return _resolve_toml(path_or_name, recipes_dir(), "training recipe", InputError)


def analysis_names() -> list[str]:
    """The packaged analysis specs by name."""
    return _toml_names(analyses_dir())


def resolve_analysis(path_or_name: str | os.PathLike[str]) -> Path:
    """An analysis spec from a file path, else the packaged ``analyses/<name>.toml``."""
    return _resolve_toml(path_or_name, analyses_dir(), "analysis spec", ConfigError)
