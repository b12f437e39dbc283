"""Unit kinds: how a unit's rows are defined, how it draws its objects and how it builds its training
rows, kept together since the two must agree column for column.

- ``object``: one reco object per selected source object (``Jet`` from ``GenJet``), with an optional
  efficiency model deciding which are reconstructed; training pairs each source object with the reco
  object pointing to it through ``gen_index``, or through the chain of cross-references of ``match``
  (``Electron.jetIdx`` -> ``Jet.genJetIdx`` -> ``GenJet``), restricted to the reco objects ``match.selection`` keeps.
- ``multiplicity``: a variable-length list per event (fake jets), drawn autoregressively up to
  ``max_objects``, each object conditioned on the previous one; a classifier decides whether one more follows.
- ``event``: one fixed vector per event (MET, the W+jet vector of Chen et al.), optionally for the events
  passing a ``selection`` only (the others are dropped from the chain's output).

The chain, dataset extraction and training see only :class:`UnitKind`; a new kind is one registered class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import awkward as ak
import numpy as np
import torch
from typing_extensions import override

from flashsim import event_outputs
from flashsim.errors import ChainError, InputError, UnitError
from flashsim.events import flat, group_ranks, pointing, references_to, take
from flashsim.expressions import REFERENCE_CUTS, parse, select
from flashsim.models import check_model_config
from flashsim.registry import Registry
from flashsim.streams import RowNoise, mix

if TYPE_CHECKING:
    from flashsim.datasets import ExtractionReport
    from flashsim.spec import UnitSpec
    from flashsim.unit import Unit

__all__ = ["UnitKind", "ObjectKind", "MultiplicityKind", "EventKind", "KINDS", "POSITION", "PREVIOUS", "EVENT_ID", "flat"]

POSITION = "position"  # context column of multiplicity units: index of the object being drawn
PREVIOUS = "prev_"  # prefix of multiplicity context columns holding the previous object's values (0 for the first)
ORDER_REDRAWS = 20  # multiplicity units: redraws of an object drawn out of sort_by order before it is capped
FIRST_REDRAWS = 4  # the first redraws are drawn together, then the rest: most rows are in order after a few
EVENT_ID = "event_id"
_EVENT_ONLY = ("selection", "event_columns", "target_features", "training_selection", "outputs")

Outputs = dict[str, ak.Array]


def _flat64(values: ak.Array) -> np.ndarray:
    return flat(values).astype(np.float64)


def _add_constants(columns: dict[str, np.ndarray], constants: Mapping[str, Any], n: int) -> None:
    """Fixed-valued output fields (e.g. a fake jet's genJetIdx = -1, a muon's mass)."""
    for name, value in constants.items():
        columns[name] = np.full(n, value, dtype=np.int32 if isinstance(value, int) else np.float32)


def _refuse(spec: UnitSpec, kind: str, keys: tuple[str, ...]) -> None:
    given = [k for k in keys if k in spec.model_fields_set]
    if given:
        raise UnitError(f"{given} are not used by {kind} units")


KINDS: Registry[type[UnitKind]] = Registry("unit kind")


class UnitKind:
    """What differs between unit kinds, behind one interface."""

    type: ClassVar[str] = ""
    classifier: ClassVar[str | None] = None  # name of the model deciding whether an object is drawn

    def check(self, spec: UnitSpec) -> None:
        """Refuse a spec this kind cannot run (a missing table, one it would ignore)."""
        if self.type != "event":
            _refuse(spec, self.type, _EVENT_ONLY)

    def extra_context(self, spec: UnitSpec) -> list[str]:  # noqa: ARG002  (the default of the interface)
        """Context columns the kind adds to the declared ones."""
        return []

    def classifier_config(self, spec: UnitSpec) -> dict[str, Any] | None:  # noqa: ARG002  (the default of the interface)
        """The classifier's model table (None: the kind has none)."""
        return None

    def rows(self, unit: Unit, events: ak.Array) -> ak.Array | None:  # noqa: ARG002  (the default of the interface)
        """Selected source objects (jagged, with ``_index``), or None for per-event units."""
        return None

    def draw(self, unit: Unit, events: ak.Array, noise: RowNoise, device: torch.device,
             batch_size: int) -> tuple[ak.Array, Outputs]:
        """The events (fewer if the unit selects) and the collections drawn for them; ``noise`` is keyed per event."""
        raise NotImplementedError

    def training_rows(self, unit: Unit, events: ak.Array, event_ids: np.ndarray, report: ExtractionReport) -> dict[str, np.ndarray]:
        """Training columns: ``event_id``, ``reconstructed`` and ``ctx.``/``ref.``/``tgt.`` columns."""
        raise NotImplementedError

    @staticmethod
    def _finish(unit: Unit, output: ak.Array) -> ak.Array:
        """Apply the ``output_rules`` in order, then the ``output_selection``; the values kept are checked (``check_drawn``)."""
        spec = unit.spec
        if not spec.output_rules and not spec.output_selection:
            unit.check_drawn({c: output[c] for c in output.fields})
            return output
        jagged = output.ndim > 1
        columns = {c: flat(output[c]) for c in output.fields}  # the rules on flat numpy columns (awkward broadcasts are slow)
        event = np.repeat(np.arange(len(output)), ak.to_numpy(ak.num(output, axis=1))) if jagged else np.arange(len(output))
        for rule in spec.output_rules:
            mask = np.broadcast_to(parse(rule.where, f"unit {unit.name!r} output_rules")(columns), event.shape)
            for column in rule.columns:
                columns[column] = np.where(mask, rule.value, columns[column]).astype(columns[column].dtype)
        if spec.output_selection:
            keep = np.broadcast_to(parse(spec.output_selection, f"unit {unit.name!r} output_selection")(columns), event.shape)
            columns = {c: v[keep] for c, v in columns.items()}
            event = event[keep]
        output = ak.zip({c: ak.unflatten(v, np.bincount(event, minlength=len(output))) for c, v in columns.items()} if jagged
                        else columns)
        unit.check_drawn({c: output[c] for c in output.fields})
        return output

    @staticmethod
    def _reco(unit: Unit, events: ak.Array) -> ak.Array:
        """The unit's reco collection in a training input, with its target columns."""
        spec = unit.spec
        if spec.output not in events.fields:
            raise InputError(f"unit {unit.name!r}: reco collection {spec.output!r} not in the input (have {sorted(events.fields)})")
        reco = events[spec.output]
        missing = [c for c in spec.target_columns if c not in reco.fields] if not spec.target_features else []
        if missing:
            raise InputError(f"unit {unit.name!r}: target columns {missing} not in collection {spec.output!r} (has {reco.fields})")
        return reco


@KINDS.register
class ObjectKind(UnitKind):
    """One reco object per selected source object, with an optional efficiency model."""

    type = "object"
    classifier = "efficiency"

    def check(self, spec: UnitSpec) -> None:
        super().check(spec)
        if not spec.source.collection:
            raise UnitError("object units need source.collection")
        if not spec.gen_index and spec.match is None:
            raise UnitError("object units need gen_index (the reco collection's cross-reference to the source, e.g. genJetIdx) "
                            "or match (a chain of cross-references to it)")
        if spec.gen_index and spec.match is not None:
            raise UnitError("gen_index and match both say how reco objects reach the source: give one "
                            f"(match.through = ['{spec.output}.{spec.gen_index}'] is gen_index = '{spec.gen_index}')")
        written = spec.hops[0][1]
        if written in spec.constants or written in spec.target_columns or written in spec.carry:
            raise UnitError(f"{spec.output}_{written} is the cross-reference the unit writes (match.through[0]); "
                            "it cannot also be a constant, target or carried column")
        _refuse(spec, self.type, ("multiplicity",))
        if spec.efficiency is not None:
            check_model_config({"type": "efficiency", **spec.efficiency}, "efficiency")
        if spec.selection_redraws:
            _check_selection_redraws(spec)

    def classifier_config(self, spec: UnitSpec) -> dict[str, Any] | None:
        return spec.efficiency

    def rows(self, unit: Unit, events: ak.Array) -> ak.Array:
        coll = unit.spec.source.collection
        assert coll is not None
        if coll not in events.fields:
            raise InputError(f"unit {unit.name!r}: source collection {coll!r} not in the events (have {sorted(events.fields)})")
        objects = events[coll]
        objects = ak.with_field(objects, ak.local_index(objects, axis=1), "_index")
        cut = unit.spec.source.selection
        return objects[select(cut, objects, f"unit {unit.name!r} selection")] if cut else objects

    def draw(self, unit, events, noise, device, batch_size):
        spec = unit.spec
        coll = spec.source.collection
        assert coll is not None
        rows = self.rows(unit, events)
        if spec.match is not None and spec.match.rank > 1:  # the sources already holding rank - 1 objects of earlier units
            reco_event, index = self._reached(unit, events)
            source_counts = self._source_counts(unit, events)
            rows = self._held_rows(unit, rows, source_counts, _ranked_partner(source_counts, reco_event, index, spec.match.rank)[1])
        context = unit.context_array(unit.context_columns(events, rows))
        counts = ak.to_numpy(ak.num(rows, axis=1))
        row_event = np.repeat(np.arange(len(events)), counts)
        source_index = flat(rows["_index"]).astype(np.int64)
        # one stream per source object: its event and its index in the source collection
        objects = RowNoise(mix(noise.keys[row_event], source_index.astype(np.uint64)))
        if unit.efficiency is not None:
            keep = unit.decide(unit.efficiency, context, objects.derive("efficiency"), device, batch_size)
        else:
            keep = np.ones(len(context), bool)
        refs = {k: _flat64(v)[keep] for k, v in unit.reference_columns(events, rows).items()}
        columns = _draw_accepted(unit, context[keep], objects.derive("model").subset(keep), refs, device, batch_size)
        kept_counts = ak.to_numpy(ak.sum(ak.unflatten(keep, counts), axis=1))
        for out_name, src_name in spec.carry.items():
            columns[out_name] = ak.to_numpy(ak.flatten(rows[src_name]))[keep]
        columns[spec.hops[0][1]] = _back_through(events, spec.hops, coll, row_event, source_index)[keep].astype(np.int32)
        if spec.partner is not None:  # the first object of partner.collection from the same source object
            partner = spec.partner
            assert spec.gen_index is not None
            if partner.collection not in events.fields or spec.gen_index not in events[partner.collection].fields:
                raise ChainError(f"unit {unit.name!r}: partner.collection {partner.collection!r} (for {spec.output}_{partner.field}) "
                                 f"needs {partner.collection}_{spec.gen_index} from an earlier unit; the events have {sorted(events.fields)}")
            hops = [(spec.output, partner.field), (partner.collection, spec.gen_index)]
            columns[partner.field] = _back_through(events, hops, coll, row_event, source_index)[keep].astype(np.int32)
        _add_constants(columns, spec.constants, int(keep.sum()))
        output = ak.zip({k: ak.unflatten(v, kept_counts) for k, v in columns.items()})
        return events, {spec.output: self._finish(unit, output)}

    def row_partners(self, unit: Unit, events: ak.Array, report: ExtractionReport) -> tuple[ak.Array, np.ndarray, np.ndarray]:
        """The selected source objects, each one's event and the flat position in the reco collection of the object
        it is trained on (-1: none): the reco objects the unit stands for (the ``match.rank``-th of each source)."""
        spec = unit.spec
        rank = spec.match.rank if spec.match is not None else 1
        reco_event, index = self._reached(unit, events, report)
        source_counts = self._source_counts(unit, events)
        partner, held, dangling = _ranked_partner(source_counts, reco_event, index, rank)
        report.dangling_index += dangling
        report.shared_partner += int(np.sum(held > rank))
        rows = self._held_rows(unit, self.rows(unit, events), source_counts, held)
        row_event, position = _row_positions(rows, source_counts)
        return rows, row_event, partner[position]

    def _reached(self, unit: Unit, events: ak.Array, report: ExtractionReport | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each object of the unit's reco collection: its event and the index of the source object it reaches
        (-1: none, or cut by ``match.selection``); dangling indices are counted in ``report`` when given."""
        spec = unit.spec
        reco = self._reco(unit, events)
        reco_event = np.repeat(np.arange(len(events)), ak.to_numpy(ak.num(reco, axis=1)))
        index = self._source_index(unit, events, reco_event, report)
        if spec.match is not None and spec.match.selection:
            index[~_reco_selection(unit, events, reco, reco_event)] = -1
        return reco_event, index

    @staticmethod
    def _source_counts(unit: Unit, events: ak.Array) -> np.ndarray:
        assert unit.spec.source.collection is not None
        return ak.to_numpy(ak.num(events[unit.spec.source.collection], axis=1))

    @staticmethod
    def _held_rows(unit: Unit, rows: ak.Array, source_counts: np.ndarray, held: np.ndarray) -> ak.Array:
        """The rows whose source object already holds ``match.rank`` - 1 reco objects (all rows for rank 1)."""
        rank = unit.spec.match.rank if unit.spec.match is not None else 1
        if rank == 1:
            return rows
        enough = held[_row_positions(rows, source_counts)[1]] >= rank - 1
        return rows[ak.unflatten(enough, ak.num(rows, axis=1))]

    def training_rows(self, unit, events, event_ids, report):
        spec = unit.spec
        reco = self._reco(unit, events)
        rows, row_event, row_partner = self.row_partners(unit, events, report)
        table = {EVENT_ID: event_ids[row_event], "reconstructed": row_partner >= 0}
        table |= {f"ctx.{k}": _flat64(v) for k, v in unit.context_columns(events, rows).items()}
        table |= {f"ref.{k}": _flat64(v) for k, v in unit.reference_columns(events, rows).items()}
        for col in spec.target_columns:
            values_all = flat(reco[col])
            values = np.zeros(len(row_partner), dtype=values_all.dtype)
            values[row_partner >= 0] = values_all[row_partner[row_partner >= 0]]
            table[f"tgt.{col}"] = values
        return table

    @staticmethod
    def _source_index(unit: Unit, events: ak.Array, reco_event: np.ndarray, report: ExtractionReport | None) -> np.ndarray:
        """Each reco object's index into the source collection, followed through the unit's cross-references (-1: none)."""
        spec = unit.spec
        index = None
        for collection, field in spec.hops:
            if collection not in events.fields or field not in events[collection].fields:
                raise InputError(f"unit {unit.name!r}: cross-reference {collection}_{field} not in the input")
            values = flat(events[collection][field]).astype(np.int64)
            if index is None:
                index = values
                continue
            counts = ak.to_numpy(ak.num(events[collection], axis=1))
            index, dangling = take(values, counts, reco_event, index)
            if report is not None:
                report.dangling_index += dangling
        assert index is not None
        return index


@KINDS.register
class MultiplicityKind(UnitKind):
    """A variable-length list per event, drawn in descending ``sort_by`` order, each object
    conditioned on the previous one; one drawn above the previous is redrawn (and capped)."""

    type = "multiplicity"
    classifier = "multiplicity"

    def check(self, spec: UnitSpec) -> None:
        super().check(spec)
        if spec.multiplicity is None:
            raise UnitError("multiplicity units need a multiplicity table with max_objects")
        _refuse(spec, self.type, ("source", "gen_index", "match", "carry", "efficiency", "selection_redraws"))
        unknown = [c for c in spec.multiplicity.previous if c not in spec.target_columns]
        if unknown:
            raise UnitError(f"multiplicity.previous: {unknown} are not targets of the unit ({spec.target_columns})")
        check_model_config({"type": "efficiency", **(spec.multiplicity.model or {})}, "multiplicity.model")

    def extra_context(self, spec: UnitSpec) -> list[str]:
        return [POSITION] + [PREVIOUS + c for c in spec.previous_columns]

    def classifier_config(self, spec: UnitSpec) -> dict[str, Any] | None:
        return dict(spec.multiplicity.model or {}) if spec.multiplicity else {}

    def draw(self, unit, events, noise, device, batch_size):
        spec = unit.spec
        assert spec.multiplicity is not None and unit.multiplicity is not None
        previous = spec.previous_columns
        raw = {k: _flat64(v) for k, v in unit.context_columns(events, None).items()}
        raw |= {PREVIOUS + c: np.zeros(len(events)) for c in previous}
        alive = np.ones(len(events), bool)
        counts = np.zeros(len(events), np.int64)
        drawn: list[dict[str, np.ndarray]] = []  # per position: inverse-transformed objects of the events still alive
        owners: list[np.ndarray] = []
        for position in range(spec.multiplicity.max_objects):
            idx = np.flatnonzero(alive)
            if len(idx) == 0:
                break
            context = unit.context_pipeline.forward({**{k: v[idx] for k, v in raw.items()}, POSITION: np.full(len(idx), float(position))})
            here = RowNoise(mix(noise.keys[idx], np.uint64(position)))  # the event's object at this position
            more = unit.decide(unit.multiplicity, context, here.derive("more"), device, batch_size)
            alive[idx[~more]] = False
            idx, context, here = idx[more], context[more], here.subset(more)
            if len(idx) == 0:
                break
            refs = {r: raw[r][idx] for r in unit.target_pipeline.references}  # previous-object columns
            objects = unit.target_pipeline.inverse(unit.draw(context, here.derive("model"), device, batch_size), refs)
            if position > 0 and spec.sort_by in previous:
                self._keep_order(unit, objects, raw[PREVIOUS + spec.sort_by][idx], context, refs, here, device, batch_size)
            for c in previous:
                raw[PREVIOUS + c][idx] = objects[c]
            drawn.append(objects)
            owners.append(idx)
            counts[idx] += 1
        if drawn:
            order = np.argsort(np.concatenate(owners), kind="stable")
            columns = {c: np.concatenate([d[c] for d in drawn])[order] for c in drawn[0]}
        else:
            empty = {r: np.zeros(0) for r in unit.target_pipeline.references}  # no event drew an object
            columns = unit.target_pipeline.inverse(np.zeros((0, unit.target_pipeline.n_features), np.float32), empty)
        _add_constants(columns, spec.constants, int(counts.sum()))
        output = ak.zip({k: ak.unflatten(v, counts) for k, v in columns.items()})
        return events, {spec.output: self._finish(unit, output)}

    @staticmethod
    def _keep_order(unit: Unit, objects: dict[str, np.ndarray], previous: np.ndarray, context: np.ndarray,
                    refs: Mapping[str, np.ndarray], noise: RowNoise, device: torch.device, batch_size: int) -> None:
        """Redraw objects that would sort before the previous one (the flow's leak across the ordering edge),
        up to ``ORDER_REDRAWS`` times, then cap the rest at it: the model's density truncated to descending order.

        The attempts of a block are drawn in one call (:func:`_redraw`)."""
        key = unit.spec.sort_by
        assert key is not None
        bad = np.flatnonzero(objects[key] > previous)
        split = min(FIRST_REDRAWS, ORDER_REDRAWS)
        for first, stop in ((0, split), (split, ORDER_REDRAWS)):
            if len(bad) == 0:
                return
            if stop == first:
                continue
            bad = _redraw(unit, objects, bad, [f"order{a}" for a in range(first, stop)], context, refs, noise,
                          lambda drawn, rows: drawn[key] <= previous[rows], device, batch_size)
        objects[key] = np.minimum(objects[key], previous).astype(objects[key].dtype)

    @override
    def training_rows(self, unit, events, event_ids, report):
        """One row per (event, position) up to min(n, N - 1); objects at positions < n carry targets."""
        spec = unit.spec
        assert spec.multiplicity is not None
        reco = self._reco(unit, events)
        n_max = spec.multiplicity.max_objects
        cut = spec.multiplicity.selection
        objects = reco[select(cut, reco, f"unit {unit.name!r} multiplicity.selection")] if cut else reco
        if spec.sort_by:
            objects = objects[ak.argsort(objects[spec.sort_by], axis=1, ascending=False, stable=True)]
        counts = ak.to_numpy(ak.num(objects, axis=1))
        n_rows = np.minimum(counts + 1, n_max)
        row_event = np.repeat(np.arange(len(events)), n_rows)
        position = np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)  # 0..n_rows-1 per event
        has_object = position < counts[row_event]
        context = {k: _flat64(v) for k, v in unit.context_columns(events, None).items()}
        table = {EVENT_ID: event_ids[row_event], "reconstructed": has_object, f"ctx.{POSITION}": position.astype(np.float64)}
        table |= {f"ctx.{k}": v[row_event] for k, v in context.items()}
        padded = ak.pad_none(objects, n_max, axis=1, clip=True)
        for col in spec.target_columns:
            dense = ak.to_numpy(ak.fill_none(padded[col], 0))
            table[f"tgt.{col}"] = dense[row_event, np.minimum(position, n_max - 1)]
            if col in spec.previous_columns:
                table[f"ctx.{PREVIOUS}{col}"] = np.where(position > 0, dense[row_event, np.maximum(position - 1, 0)], 0).astype(np.float64)
        for ref in unit.target_pipeline.references:  # targets relative to the previous object (phi_difference to prev_phi)
            if f"ctx.{ref}" not in table:
                raise UnitError(f"unit {unit.name!r}: target reference {ref!r} is not a context column of this multiplicity unit "
                                f"(use one of {[PREVIOUS + c for c in spec.previous_columns]})")
            table[f"ref.{ref}"] = table[f"ctx.{ref}"]
        return table


@KINDS.register
class EventKind(UnitKind):
    """One fixed vector per event, for the events passing the unit's ``selection``."""

    type = "event"

    def check(self, spec: UnitSpec) -> None:
        super().check(spec)
        _refuse(spec, self.type, ("source", "gen_index", "match", "link", "partner", "carry", "constants", "efficiency", "multiplicity",
                                  "output_rules", "output_selection", "selection_redraws"))

    def draw(self, unit, events, noise, device, batch_size):
        spec = unit.spec
        keep = unit.event_mask(events)
        if keep is not None:
            events, noise = events[keep], noise.subset(keep)
        raw = unit.context_columns(events, None)
        context = unit.context_array(raw)
        refs = {k: _flat64(v) for k, v in unit.reference_columns(events, None, raw).items()}
        columns = unit.target_pipeline.inverse(unit.draw(context, noise.derive("model"), device, batch_size), refs)
        unit.check_drawn(columns)
        if not spec.outputs:
            return events, {spec.output: ak.zip(columns, depth_limit=1)}
        available = {k: _flat64(v) for k, v in (raw | unit.event_columns(events)).items()} | columns
        return events, event_outputs.build_collections(spec.outputs, available, len(events))

    @override
    def training_rows(self, unit, events, event_ids, report):
        spec = unit.spec
        if not spec.target_features:
            self._reco(unit, events)
        keep = unit.event_mask(events)  # the unit's event selection (analysis-specific units)
        if keep is not None:
            events, event_ids = events[keep], event_ids[keep]
        context = unit.context_columns(events, None)
        targets = {c: flat(v) for c, v in unit.target_values(events).items()}
        labelled = np.ones(len(events), bool)
        if spec.target_features:  # derived targets are NaN where no reco object is matched
            labelled &= np.logical_and.reduce([np.isfinite(np.asarray(v, np.float64)) for v in targets.values()])
        cut = unit.training_mask(events, context, targets)
        if cut is not None:
            labelled &= cut
        table = {EVENT_ID: event_ids, "reconstructed": labelled}
        table |= {f"ctx.{k}": _flat64(v) for k, v in context.items()}
        table |= {f"ref.{k}": _flat64(v) for k, v in unit.reference_columns(events, None, context).items()}
        table |= {f"tgt.{c}": v for c, v in targets.items()}
        return table


def _check_selection_redraws(spec: UnitSpec) -> None:
    """``selection_redraws`` needs an efficiency model and an ``output_selection`` on the drawn target columns alone."""
    if spec.efficiency is None or not spec.output_selection:
        raise UnitError(f"selection_redraws = {spec.selection_redraws}: needs an efficiency model and an output_selection "
                        "(an object the efficiency reconstructed but drawn outside the selection is redrawn)")
    read = parse(spec.output_selection, "output_selection").names
    outside = sorted(read - set(spec.target_columns))
    if outside:
        raise UnitError(f"selection_redraws = {spec.selection_redraws}: output_selection {spec.output_selection!r} reads "
                        f"{outside}, which are not target columns (the redraw decides on the drawn targets alone)")
    ruled = sorted(read & {c for rule in spec.output_rules for c in rule.columns})
    if ruled:
        raise UnitError(f"selection_redraws = {spec.selection_redraws}: output_selection {spec.output_selection!r} reads "
                        f"{ruled}, which output_rules set after the draw (the redraw decides on the drawn values)")


def _draw_accepted(unit: Unit, context: np.ndarray, noise: RowNoise, refs: dict[str, np.ndarray], device: torch.device,
                   batch_size: int) -> dict[str, np.ndarray]:
    """The target columns drawn for every context row; rows outside ``output_selection`` are redrawn (each attempt its
    own stream) up to ``selection_redraws`` times, so the kept objects follow the flow truncated to the selection."""
    columns = unit.target_pipeline.inverse(unit.draw(context, noise, device, batch_size), refs)
    spec = unit.spec
    if not spec.selection_redraws:
        return columns
    accepted = parse(spec.output_selection or "", f"unit {unit.name!r} output_selection")
    outside = np.flatnonzero(~np.broadcast_to(accepted(columns), (len(context),)))
    done = 0
    while len(outside) and done < spec.selection_redraws:
        copies = min(spec.selection_redraws - done, max(1, len(context) // len(outside)))  # about the first call's size
        labels = [f"selection redraw {attempt}" for attempt in range(done + 1, done + copies + 1)]
        outside = _redraw(unit, columns, outside, labels, context, refs, noise, lambda drawn, _: accepted(drawn), device, batch_size)
        done += copies
    return columns


def _redraw(unit: Unit, columns: dict[str, np.ndarray], rows: np.ndarray, labels: list[str], context: np.ndarray,
            refs: Mapping[str, np.ndarray], noise: RowNoise, accepted: Callable[[dict[str, np.ndarray], np.ndarray], Any],
            device: torch.device, batch_size: int) -> np.ndarray:
    """Redraw ``rows`` of ``columns`` in place, one attempt per stream label, all in one call: each row keeps its first
    attempt that ``accepted`` (drawn columns, their rows) passes, else its last, as one attempt after the other would.
    Returns the rows no attempt passed."""
    tiled = np.tile(rows, len(labels))  # attempt-major: row j * len(rows) + i is attempt j of rows[i]
    here = noise.subset(rows)
    streams = RowNoise(np.concatenate([here.derive(label).keys for label in labels]))
    drawn = unit.target_pipeline.inverse(unit.draw(context[tiled], streams, device, batch_size), {k: v[tiled] for k, v in refs.items()})
    ok = np.broadcast_to(accepted(drawn, tiled), (len(tiled),)).reshape(len(labels), len(rows))
    found = ok.any(axis=0)
    pick = np.where(found, ok.argmax(axis=0), len(labels) - 1) * len(rows) + np.arange(len(rows))
    for name, values in drawn.items():
        columns[name][rows] = values[pick]
    return rows[~found]


def _row_positions(rows: ak.Array, source_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each selected source row's event and flat position in its whole source collection (``source_counts`` per event)."""
    row_event = np.repeat(np.arange(len(rows)), ak.to_numpy(ak.num(rows, axis=1)))
    return row_event, (np.cumsum(source_counts) - source_counts)[row_event] + flat(rows["_index"]).astype(np.int64)


def _ranked_partner(n_source: np.ndarray, event: np.ndarray, index: np.ndarray, rank: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """For every source object (``n_source`` per event), the flat position of the ``rank``-th object (in their order:
    the leading one for rank 1) pointing to it through ``index`` (flat, with each object's ``event``; -1 if none) and
    how many objects point to it; also the number of indices out of range."""
    offsets = np.r_[0, np.cumsum(n_source)]
    valid, dangling = pointing(index, n_source[event])
    positions = np.flatnonzero(valid)
    target = offsets[event[positions]] + index[positions]
    order, occurrence, held = group_ranks(target, int(offsets[-1]))  # by source object, each one's objects in their order
    pick = order[occurrence == rank - 1]
    partner = np.full(offsets[-1], -1, np.int64)
    partner[target[pick]] = positions[pick]
    return partner, held, dangling


def _reco_selection(unit: Unit, events: ak.Array, reco: ak.Array, reco_event: np.ndarray) -> np.ndarray:
    """``match.selection`` on the (flat) reco objects; ``Collection.field`` reads the field of the object their
    cross-reference into ``Collection`` points to (0 where it points to none)."""
    assert unit.spec.match is not None and unit.spec.match.selection is not None
    where = f"unit {unit.name!r} match.selection"
    cut = REFERENCE_CUTS.parse(unit.spec.match.selection, where)
    columns: dict[str, Any] = {name: flat(reco[name]) for name in cut.names if name in reco.fields}
    for collection, field in cut.attributes:
        references = references_to(collection, reco.fields)
        if collection not in events.fields or field not in events[collection].fields or len(references) != 1:
            raise InputError(f"{where}: {collection}.{field} needs {collection}_{field} in the input and one cross-reference "
                             f"into it in {unit.spec.output!r} (has {references or 'none'})")
        index = flat(reco[references[0]]).astype(np.int64)
        counts = ak.to_numpy(ak.num(events[collection], axis=1))
        values, _ = take(flat(events[collection][field]), counts, reco_event, index, fill=0)
        columns.setdefault(collection, {})[field] = values
    unknown = sorted(cut.names - set(columns))
    if unknown:
        raise InputError(f"{where}: {unknown} are neither fields of {unit.spec.output!r} nor collections it points to")
    return np.asarray(cut(columns, where), bool)


def _back_through(events: ak.Array, hops: list[tuple[str, str]], source: str, row_event: np.ndarray,
                  source_index: np.ndarray) -> np.ndarray:
    """The value of the first cross-reference a drawn object gets: its source index for a direct one; through
    several, the index of the first object of the next collection that reaches the source object (-1: none),
    e.g. the flash Jet whose genJetIdx is the electron's GenJet."""
    index = source_index
    pointed = ak.to_numpy(ak.num(events[source], axis=1))  # objects per event of the collection ``index`` points into
    for collection, field in reversed(hops[1:]):
        counts = ak.to_numpy(ak.num(events[collection], axis=1))
        partner = _ranked_partner(pointed, np.repeat(np.arange(len(counts)), counts), flat(events[collection][field]).astype(np.int64))[0]
        starts = np.r_[0, np.cumsum(counts)][:-1]
        found, _ = take(partner, pointed, row_event, index)
        index = np.where(found >= 0, found - starts[row_event], -1)
        pointed = counts
    return index
