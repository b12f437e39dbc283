"""Conditioning features computed from events by name."""

from __future__ import annotations

import awkward as ak
import pytest

from flashsim.errors import UnitError
from flashsim.features import compute, feature_names


def _events() -> ak.Array:
    return ak.Array({"GenJet": [[{"pt": 30.0, "partonFlavour": -5}, {"pt": 20.0, "partonFlavour": 21}], [],
                                [{"pt": 15.0, "partonFlavour": 2}]]})


def test_one_hot_gives_one_column_per_value_aligned_with_the_rows() -> None:
    events = _events()
    spec = {"feature": "one_hot", "field": "partonFlavour", "values": [0, 2, 5, 21], "abs": True}
    assert feature_names(spec) == ["partonFlavour_is0", "partonFlavour_is2", "partonFlavour_is5", "partonFlavour_is21"]
    cols = compute(spec, events, events.GenJet, "unit 'jet'")
    assert cols["partonFlavour_is5"].tolist() == [[1, 0], [], [0]]
    assert cols["partonFlavour_is21"].tolist() == [[0, 1], [], [0]]
    assert cols["partonFlavour_is2"].tolist() == [[0, 0], [], [1]]
    assert cols["partonFlavour_is0"].tolist() == [[0, 0], [], [0]]
    signed = compute({**spec, "abs": False}, events, events.GenJet, "unit 'jet'")
    assert signed["partonFlavour_is5"].tolist() == [[0, 0], [], [0]]


def test_one_hot_errors_name_the_unit() -> None:
    events = _events()
    with pytest.raises(UnitError, match="unit 'jet'.*non-empty list 'values'"):
        compute({"feature": "one_hot", "field": "partonFlavour", "values": []}, events, events.GenJet, "unit 'jet'")
    with pytest.raises(UnitError, match="unit 'met'.*needs a source collection"):
        compute({"feature": "one_hot", "field": "partonFlavour", "values": [5]}, events, None, "unit 'met'")


def test_bits_unpack_the_flag_word_instead_of_passing_it_raw() -> None:
    events = ak.Array({"GenPart": [[{"statusFlags": 0b1_0000_0101}, {"statusFlags": 0b100}], []]})
    spec = {"feature": "bits", "field": "statusFlags", "bits": [0, 2, 8]}
    assert feature_names(spec) == ["statusFlags_bit0", "statusFlags_bit2", "statusFlags_bit8"]
    cols = compute(spec, events, events.GenPart, "unit 'muon'")
    assert cols["statusFlags_bit0"].tolist() == [[1, 0], []]
    assert cols["statusFlags_bit2"].tolist() == [[1, 1], []]
    assert cols["statusFlags_bit8"].tolist() == [[1, 0], []]


def test_field_may_be_taken_in_absolute_value_under_its_own_name() -> None:
    events = _events()
    spec = {"field": "partonFlavour", "abs": True, "name": "abs_flavour"}
    assert feature_names(spec) == ["abs_flavour"]
    assert compute(spec, events, events.GenJet, "unit 'jet'")["abs_flavour"].tolist() == [[5, 21], [], [2]]


def test_nearest_other_jet_excludes_the_jet_itself() -> None:
    jets = [[{"pt": 50.0, "eta": 0.0, "phi": 0.0, "mass": 5.0}, {"pt": 20.0, "eta": 0.5, "phi": 0.0, "mass": 3.0},
             {"pt": 10.0, "eta": 2.0, "phi": 0.0, "mass": 2.0}], [{"pt": 30.0, "eta": 1.0, "phi": 1.0, "mass": 4.0}]]
    events = ak.Array({"GenJet": jets})
    spec = {"feature": "nearest", "collection": "GenJet", "k": 1, "fields": ["dr", "pt"], "name": "genjet",
            "exclude_self": True}
    assert feature_names(spec) == ["genjet1_dr", "genjet1_pt"]
    cols = compute(spec, events, events.GenJet, "unit 'jet'")
    assert cols["genjet1_pt"].tolist() == [[20.0, 50.0, 20.0], [0.0]]  # a lone jet has no neighbour: pt 0
    assert cols["genjet1_dr"].tolist() == [pytest.approx([0.5, 0.5, 1.5]), [10.0]]  # and the far ΔR
    with_self = compute({**spec, "exclude_self": False}, events, events.GenJet, "unit 'jet'")
    assert with_self["genjet1_dr"].tolist() == [[0.0, 0.0, 0.0], [0.0]]


def _nearest_by_brute_force(rows: ak.Array, others: ak.Array, k: int, field: str, exclude_self: bool) -> tuple[list, list]:
    """Per row, the ΔR and ``field`` of its k nearest others, from a plain loop (10 and 0 where there are fewer)."""
    import math

    drs, values = [], []
    for event_rows, event_others in zip(rows.tolist(), others.tolist()):
        for row in event_rows:
            pairs = []
            for other in event_others:
                dphi = (row["phi"] - other["phi"] + math.pi) % (2 * math.pi) - math.pi
                dr = math.hypot(row["eta"] - other["eta"], dphi)
                if dr > 0 or not exclude_self:
                    pairs.append((dr, other[field]))
            pairs.sort(key=lambda p: p[0])
            pairs += [(10.0, 0)] * k
            drs.append([p[0] for p in pairs[:k]])
            values.append([p[1] for p in pairs[:k]])
    return drs, values


@pytest.mark.parametrize("exclude_self", [False, True])
def test_nearest_gives_the_k_nearest_in_delta_r(exclude_self: bool) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, 200)
    counts_other = rng.integers(0, 4, 200)
    jets = ak.unflatten(ak.zip({"eta": rng.uniform(-3, 3, counts.sum()), "phi": rng.uniform(-np.pi, np.pi, counts.sum()),
                                "pt": rng.uniform(10, 100, counts.sum())}), counts)
    parts = ak.unflatten(ak.zip({"eta": rng.uniform(-3, 3, counts_other.sum()), "phi": rng.uniform(-np.pi, np.pi, counts_other.sum()),
                                 "pdgId": rng.choice([11, -11, 22], counts_other.sum())}), counts_other)
    events = ak.zip({"GenJet": jets, "GenPart": parts}, depth_limit=1)
    others, field = (events.GenJet, "pt") if exclude_self else (events.GenPart, "pdgId")
    spec = {"feature": "nearest", "collection": "GenJet" if exclude_self else "GenPart", "k": 2, "fields": ["dr", field],
            "exclude_self": exclude_self, "name": "n"}
    cols = compute(spec, events, events.GenJet, "unit 'jet'")
    drs, values = _nearest_by_brute_force(events.GenJet, others, 2, field, exclude_self)
    for i in range(2):
        assert ak.num(cols[f"n{i + 1}_dr"]).tolist() == counts.tolist()
        assert np.allclose(ak.flatten(cols[f"n{i + 1}_dr"]).to_numpy(), [d[i] for d in drs], rtol=1e-12)
        assert np.allclose(ak.flatten(cols[f"n{i + 1}_{field}"]).to_numpy(), [v[i] for v in values])
