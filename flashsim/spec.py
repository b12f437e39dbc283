"""What a unit is, as its ``unit.toml`` declares it, parsed in one place into a typed, strict model.

Every table at any depth refuses unknown keys, naming the file, the table path and the closest valid
key (``context[4].abz: unknown key (did you mean 'abs'?)``); cuts are parsed, feature tables, target
steps and model options are checked against their registries, and the unit kind checks what it needs.
``flashsim units --schema`` prints the JSON Schema editors use to complete and check unit files.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flashsim import event_outputs, expressions, features
from flashsim.errors import FlashsimError, UnitError
from flashsim.events import references_to
from flashsim.kinds import KINDS, UnitKind
from flashsim.models import check_model_config
from flashsim.registry import suggest
from flashsim.transforms import ContextPipeline, TargetPipeline

__all__ = ["FORMAT_VERSION", "UnitSpec", "Source", "Match", "Link", "Partner", "Multiplicity", "OutputRule", "Ranges", "describe_errors"]

FORMAT_VERSION = 1
DEFAULT_CONTEXT_STEPS: list[dict[str, Any]] = [{"type": "standardize"}]


class _Table(BaseModel):
    """A table of a unit file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Source(_Table):
    """The GEN objects an object unit simulates one reco object for."""

    collection: str | None = None
    selection: str | None = None

    @field_validator("selection")
    @classmethod
    def _cut(cls, value: str | None) -> str | None:
        return value if value is None else expressions.parse(value, "source.selection").expression


class Match(_Table):
    """How an object unit's reco objects reach their source object, for units whose reco collection does not point
    to the source directly (electrons from jets: ``Electron.jetIdx`` -> ``Jet.genJetIdx`` -> ``GenJet``).

    ``through`` lists the cross-references ``Collection.field`` in order: the first is a field of the unit's output
    collection, each indexes the collection of the next, the last the source collection. ``selection`` is a cut on
    the reco objects the unit stands for (e.g. those no GenPart-sourced unit covers). ``rank`` k > 1: the unit stands
    for the k-th such object of a source (in the collection's order), drawn on the sources already holding k - 1
    objects of earlier units (a jet's second electron)."""

    through: list[str] = Field(min_length=1, max_length=4)
    selection: str | None = None
    rank: int = Field(1, ge=1, le=4)

    @field_validator("through")
    @classmethod
    def _hops(cls, value: list[str]) -> list[str]:
        for hop in value:
            collection, _, field = hop.partition(".")
            if not collection or not field or "." in field:
                raise ValueError(f"{hop!r} is not 'Collection.field' (e.g. 'Electron.jetIdx')")
        return value

    @field_validator("selection")
    @classmethod
    def _cut(cls, value: str | None) -> str | None:
        return value if value is None else expressions.REFERENCE_CUTS.parse(value, "match.selection").expression

    @property
    def hops(self) -> list[tuple[str, str]]:
        """``through`` as (collection, field) pairs."""
        return [(c, f) for c, _, f in (hop.partition(".") for hop in self.through)]


class _Reference(_Table):
    """An output field the unit derives (not draws): a NanoAOD cross-reference into an earlier unit's ``collection``,
    so merges renumber it."""

    field: str
    collection: str

    @model_validator(mode="after")
    def _reference(self) -> _Reference:
        if not references_to(self.collection, [self.field]):
            named = self.collection[:1].lower() + self.collection[1:] + "Idx"
            raise ValueError(f"field {self.field!r} is not a cross-reference into {self.collection!r} (NanoAOD names those {named!r})")
        return self


class Link(_Reference):
    """An output field holding each drawn object's nearest object of an earlier unit's ``collection`` within ΔR <
    ``max_dr`` (-1: none), as refsim's ``Electron.jetIdx`` (the jet that clustered the electron) is in 99.5-100 % of
    its electrons."""

    max_dr: float = Field(gt=0, le=10)


class Partner(_Reference):
    """An output field holding the first object of an earlier unit's ``collection`` whose ``gen_index`` points to the
    drawn object's source object (-1: none), as refsim's ``Photon.electronIdx`` names the electron of the same gen
    electron in all of its photons of electron clusters."""


class Multiplicity(_Table):
    """How a multiplicity unit draws its variable-length list."""

    max_objects: int = Field(ge=1, le=1000)
    selection: str | None = None  # which reco objects the unit stands for (training)
    previous: list[str] = []  # target columns of the previous object that condition the next
    model: dict[str, Any] | None = None  # the "one more object?" classifier

    @field_validator("selection")
    @classmethod
    def _cut(cls, value: str | None) -> str | None:
        return value if value is None else expressions.parse(value, "multiplicity.selection").expression


class OutputRule(_Table):
    """Set ``columns`` (drawn, carried or constant) to ``value`` where the cut ``where`` on the output columns holds
    (a flag that is a function of eta, a pdgId that follows the drawn charge)."""

    where: str
    columns: list[str] = Field(min_length=1)
    value: float


class Ranges(_Table):
    """Physical ranges the unit declares (inclusive): of GEN branches it reads (``"GenJet.pt" = [0, 6800]``),
    outside which an input value is bad input, and of the columns it draws, outside which a drawn value is a fault."""

    inputs: dict[str, tuple[float, float]] = {}
    targets: dict[str, tuple[float, float]] = {}

    @field_validator("inputs", "targets")
    @classmethod
    def _ordered(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for key, (low, high) in value.items():
            if not low <= high:
                raise ValueError(f"{key}: range [{low}, {high}] is empty")
        return value


class UnitSpec(_Table):
    """What a unit is: its rows, conditioning columns, targets and model, as read from unit.toml."""

    name: str = Field(min_length=1)
    format_version: int
    type: str
    description: str = ""
    output: str = ""  # the collection written (event units with ``outputs``: the first of them)
    source: Source = Source()
    context: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = Field(min_length=1)
    carry: dict[str, str] = {}
    constants: dict[str, int | float] = {}
    output_selection: str | None = None  # reco-level cut applied after sampling (e.g. NanoAOD's jet pt > 15)
    # object units with efficiency: an object drawn outside output_selection is redrawn up to this many times before it
    # is dropped (the efficiency already holds the acceptance; dropping would count it twice)
    selection_redraws: int = Field(default=0, ge=0, le=100)
    output_rules: list[OutputRule] = []
    gen_index: str | None = None
    match: Match | None = None
    link: Link | None = None
    partner: Partner | None = None
    efficiency: dict[str, Any] | None = None
    model: dict[str, Any]
    multiplicity: Multiplicity | None = None
    merge: bool = False
    sort_by: str | None = "pt"
    # analysis-specific event units (Chen et al. 2021)
    selection: str | None = None
    event_columns: list[dict[str, Any]] = []
    target_features: list[dict[str, Any]] = []
    training_selection: str | None = None
    outputs: list[dict[str, Any]] = []
    ranges: Ranges = Ranges()
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("format_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"format_version {value!r} is not supported by this flashsim (supports {FORMAT_VERSION})")
        return value

    @field_validator("type")
    @classmethod
    def _kind(cls, value: str) -> str:
        KINDS.get(value)
        return value

    @field_validator("output_selection", "selection", "training_selection")
    @classmethod
    def _cut(cls, value: str | None) -> str | None:
        return value if value is None else expressions.parse(value).expression

    @model_validator(mode="after")
    def _consistent(self) -> UnitSpec:
        if self.outputs:
            event_outputs.check_outputs(self.outputs, "outputs")
            self.output = self.output or self.outputs[0]["collection"]
        if not self.output:
            raise ValueError("missing required key 'output' (or, for event units, 'outputs')")
        for table in ("context", "event_columns", "target_features"):
            for i, entry in enumerate(getattr(self, table)):
                features.feature(entry, f"{table}[{i}]")
        ruled = self.target_columns + list(self.carry) + list(self.constants)
        for i, rule in enumerate(self.output_rules):
            expressions.parse(rule.where, f"output_rules[{i}].where")
            unknown = [c for c in rule.columns if c not in ruled]
            if unknown:
                raise ValueError(f"output_rules[{i}]: columns {unknown} are not targets, carried or constant columns of the unit ({ruled})")
        if self.match is not None and self.match.hops[0][0] != self.output:
            raise ValueError(f"match.through: the first cross-reference {self.match.through[0]!r} must be a field of the "
                             f"output collection {self.output!r}")
        for key in ("link", "partner"):
            if getattr(self, key) is not None:
                self._check_reference(key, getattr(self, key))
        if self.partner is not None and not self.gen_index:
            raise ValueError(f"partner: needs gen_index (the {self.partner.collection} of the same source object is the one "
                             f"whose gen_index points to it)")
        check_model_config(self.model, "model")
        self.kind.check(self)
        self._check_pipelines()
        self._check_derived_columns()
        self._check_ranges()
        return self

    def _check_reference(self, key: str, reference: Link | Partner) -> None:
        """A derived field (``link``, ``partner``) is written by its key alone, into another collection; a link needs the
        output's eta and phi."""
        written = self.target_columns + list(self.carry) + list(self.constants)
        derived = [r.field for r in (self.link, self.partner) if r is not None and r is not reference]
        if reference.field in written + derived or reference.field in [f for _, f in self.hops[:1]]:
            raise ValueError(f"{key}: {self.output}_{reference.field} is written by the {key}; it cannot also be a target, "
                             "carried, constant, match, link or partner column")
        if reference.collection == self.output:
            raise ValueError(f"{key}.collection: the unit's own output {self.output!r}; name another unit's collection")
        missing = [f for f in ("eta", "phi") if f not in written]
        if key == "link" and missing:
            raise ValueError(f"link: the output needs {missing} (targets, carried or constant columns) to find the nearest {reference.collection}")

    def _check_ranges(self) -> None:
        """Declared input ranges name a field of a collection the unit reads; target ranges name a target."""
        for key in self.ranges.inputs:
            collection, _, field = key.partition(".")
            if not field or collection not in self.inputs:
                raise ValueError(f"ranges.inputs: {key!r} is not 'Collection.field' of a collection the unit reads "
                                 f"({', '.join(sorted(self.inputs))})")
        unknown = [c for c in self.ranges.targets if c not in self.target_columns]
        if unknown:
            raise ValueError(f"ranges.targets: {unknown} are not targets of the unit ({self.target_columns})")

    def _check_pipelines(self) -> None:
        """The target and context steps build (their types and options are known)."""
        for table, build in (("targets", lambda: TargetPipeline(self.targets)), ("context", lambda: ContextPipeline(self.context_steps()))):
            try:
                build()
            except FlashsimError as exc:
                raise ValueError(f"{table}: {exc}") from None

    def _check_derived_columns(self) -> None:
        """Derived targets are produced by ``target_features``; ``outputs`` read only known columns."""
        if self.target_features:
            derived = {n for entry in self.target_features for n in features.feature_names(entry)}
            missing = [c for c in self.target_columns if c not in derived]
            if missing:
                raise ValueError(f"targets {missing} are not produced by target_features (which give {sorted(derived)})")
        if self.outputs:
            known = set(self.target_columns) | {n for e in self.context + self.event_columns for n in features.feature_names(e)}
            unread = sorted(event_outputs.columns_read(self.outputs) - known)
            if unread:
                raise ValueError(f"outputs read {unread}, which are neither targets nor context/event columns")

    # ---- reading -----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: Path | None = None) -> UnitSpec:
        """Validate a parsed unit file; a :class:`UnitError` lists every problem with its table path."""
        try:
            return cls.model_validate({**data, "path": path})
        except ValidationError as exc:
            name = data.get("name", "?") if isinstance(data, Mapping) else "?"
            raise UnitError(f"unit {name!r} ({path or 'unit spec'}): {describe_errors(exc, cls)}") from None

    @classmethod
    def load(cls, path: Path) -> UnitSpec:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UnitError(f"cannot read unit spec {path}: {exc}") from exc
        return cls.from_dict(data, path)

    # ---- derived -----------------------------------------------------------------------------

    @property
    def kind(self) -> UnitKind:
        """The unit kind (object, multiplicity, event) that draws and builds training rows."""
        return KINDS.get(self.type)()

    @property
    def previous_columns(self) -> list[str]:
        """Multiplicity units: target columns of the previous object that condition the next one."""
        return list(self.multiplicity.previous) if self.multiplicity is not None else []

    @property
    def context_columns(self) -> list[str]:
        return [n for entry in self.context for n in features.feature_names(entry)] + self.kind.extra_context(self)

    @property
    def target_columns(self) -> list[str]:
        return [c for entry in self.targets for c in entry.get("columns", [entry.get("column")])]

    @property
    def hops(self) -> list[tuple[str, str]]:
        """Object units: the cross-references (collection, field) from the output collection to the source."""
        if self.match is not None:
            return self.match.hops
        return [(self.output, self.gen_index)] if self.gen_index else []

    @property
    def produces(self) -> list[str]:
        """Collections this unit writes (several for an event unit with ``outputs``)."""
        return event_outputs.output_collections(self.outputs) if self.outputs else [self.output]

    @property
    def inputs(self) -> set[str]:
        """Collections this unit reads."""
        used = {self.source.collection} if self.source.collection else set()
        for entry in self.context + self.event_columns:
            used |= features.collections_used(entry)
        if self.merge:
            used.add(self.output)
        used |= {collection for collection, _ in self.hops[1:]}  # the reco collections a match goes through
        used |= {r.collection for r in (self.link, self.partner) if r is not None}
        return used

    @property
    def reco_branches(self) -> list[str]:
        """NanoAOD branches of the reco objects this unit draws and trains on (none for event units, which write their own)."""
        if self.outputs:
            return []
        fields = self.target_columns + list(self.carry) + list(self.constants) + [f for _, f in self.hops[:1]]
        fields += [r.field for r in (self.link, self.partner) if r is not None]
        return [f"{self.output}_{f}" for f in dict.fromkeys(fields)] + [f"{c}_{f}" for c, f in self.hops[1:]]

    def context_steps(self) -> list[dict[str, Any]]:
        """Preprocessing of every context column (default: standardise)."""
        out: list[dict[str, Any]] = []
        for entry in self.context:
            steps = entry.get("steps", DEFAULT_CONTEXT_STEPS)
            out.extend({"column": n, "steps": steps} for n in features.feature_names(entry))
        out += [{"column": c, "steps": DEFAULT_CONTEXT_STEPS} for c in self.kind.extra_context(self)]
        return out

    def digest_fields(self) -> list[Any]:
        """The parts that decide a training table's rows and columns, as JSON values."""
        dump = self.model_dump(exclude_unset=True, exclude={"path"})
        relevant = [self.type, self.output, dump.get("source", {}), self.context, self.targets, self.gen_index, dump.get("multiplicity")]
        if self.match is not None:
            relevant.append(dump.get("match"))
        if self.selection or self.event_columns or self.target_features or self.training_selection:
            relevant += [self.selection, self.event_columns, self.target_features, self.training_selection]
        return relevant


def _table_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model of the table at ``loc`` (to suggest its valid keys), if it is one."""
    current: Any = model
    key = False  # the part after a table of tables (``objects.goodmu``) is a key, not a field
    for part in loc:
        if isinstance(part, int) or key:
            key = False
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        # the table's model: the annotation itself, a member of an Optional, or the item type of a list
        candidates = [field.annotation, *get_args(field.annotation)]
        candidates += [arg for c in candidates for arg in get_args(c)]
        tables = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not tables:
            return None
        key = get_origin(field.annotation) is dict
        current = tables[0]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def describe_errors(exc: ValidationError, model: type[BaseModel]) -> str:
    """Every error of a validation as ``table.path: message``, unknown keys with the closest valid one."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = [k for k in (parent.model_fields if parent else {}) if k != "path"]
            lines.append(f"{_table_path(loc)}: unknown key {str(loc[-1])!r}{suggest(str(loc[-1]), valid)}")
        elif error["type"] == "missing":
            lines.append(f"{_table_path(loc)}: missing required key")
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
            lines.append(f"{_table_path(loc)}: {message}" if loc else message)
        else:
            lines.append(f"{_table_path(loc)}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(lines)
