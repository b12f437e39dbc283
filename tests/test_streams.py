"""Random streams keyed by the event: the output of an event does not depend on chunking, batching,
partitioning or the other events run with it, and one event can be simulated again alone."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch

from conftest import synthetic_events
from flashsim.chain import Chain
from flashsim.errors import FlashsimError
from flashsim.events import to_branches
from flashsim.io import read_events, write_events
from flashsim.streams import RowNoise, event_keys, philox4x32

CPU = torch.device("cpu")
pytestmark = pytest.mark.filterwarnings("ignore:.*without a GenPart collection")  # synthetic GEN, written without GEN


def test_philox_matches_the_random123_known_answers() -> None:
    cases = [
        ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
        ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
        ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0], [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    ]
    for counter, key, expected in cases:
        out = philox4x32(np.array(counter, np.uint64)[:, None], np.array(key, np.uint64)[:, None])
        assert out[:, 0].tolist() == expected


def test_row_noise_is_a_function_of_the_row_key_and_the_draw() -> None:
    keys = np.arange(1000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    noise = RowNoise(keys)
    z = noise.normal(1000, 7, 0, CPU, torch.float64).numpy()
    alone = RowNoise(keys[[3, 500]]).normal(2, 7, 0, CPU, torch.float64).numpy()
    np.testing.assert_array_equal(alone, z[[3, 500]])
    np.testing.assert_array_equal(noise.subset(slice(10, 20)).normal(10, 7, 0, CPU, torch.float64).numpy(), z[10:20])
    assert not np.allclose(noise.normal(1000, 7, 1, CPU, torch.float64).numpy(), z), "a redraw is a new draw"
    assert not np.allclose(noise.derive("efficiency").normal(1000, 7, 0, CPU, torch.float64).numpy(), z)
    big = RowNoise(np.arange(100_000, dtype=np.uint64)).normal(100_000, 4, 0, CPU, torch.float64).numpy()
    assert np.all(np.abs(big.mean(axis=0)) < 0.02) and np.all(np.abs(big.std(axis=0) - 1) < 0.02)
    assert np.all(np.abs(np.corrcoef(big.T) - np.eye(4)) < 0.02)
    u = RowNoise(np.arange(100_000, dtype=np.uint64)).uniform(100_000, 0, CPU, torch.float64).numpy()
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_event_keys_follow_event_ids_not_positions() -> None:
    events = synthetic_events(50, seed=1)
    keys = event_keys(events, 3, "jet")
    np.testing.assert_array_equal(event_keys(events[::-1], 3, "jet"), keys[::-1])
    assert len(np.unique(keys)) == 50
    assert not np.any(event_keys(events, 4, "jet") == keys) and not np.any(event_keys(events, 3, "met") == keys)
    with pytest.warns(UserWarning, match="keyed by the position"):
        event_keys(events[["GenJet"]], 3, "jet")


@pytest.fixture(scope="module")
def gen_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_events(synthetic_events(240, seed=31), tmp_path_factory.mktemp("streams") / "gen.root")


@pytest.fixture(scope="module")
def chain(trained_units) -> Chain:
    return Chain([trained_units[n] for n in ("tinyjet", "tinyfake", "tinymet")])


def _branches(path: Path) -> dict[str, np.ndarray]:
    return {k: ak.to_numpy(ak.flatten(v, axis=None)) for k, v in to_branches(read_events(path)).items()}


def assert_same_output(a: Path, b: Path) -> None:
    """Every branch equal: integers exactly, floats up to float32 rounding of differently shaped batches."""
    ba, bb = _branches(a), _branches(b)
    assert sorted(ba) == sorted(bb)
    for name in ba:
        assert ba[name].shape == bb[name].shape, f"{name}: {ba[name].shape} vs {bb[name].shape}"
        if ba[name].dtype.kind == "f":
            np.testing.assert_allclose(ba[name], bb[name], rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(ba[name], bb[name], err_msg=name)


def test_output_does_not_depend_on_step_or_batch_size(chain: Chain, gen_file: Path, tmp_path: Path) -> None:
    chain.generate(gen_file, tmp_path / "big.root", seed=5, step_size=50_000, batch_size=100_000)
    chain.generate(gen_file, tmp_path / "one.root", seed=5, step_size=1, batch_size=100_000)
    chain.generate(gen_file, tmp_path / "small_batch.root", seed=5, step_size=50_000, batch_size=7)
    assert_same_output(tmp_path / "big.root", tmp_path / "one.root")
    assert_same_output(tmp_path / "big.root", tmp_path / "small_batch.root")
    chain.generate(gen_file, tmp_path / "other_seed.root", seed=6)
    assert not np.array_equal(_branches(tmp_path / "big.root")["MET_pt"], _branches(tmp_path / "other_seed.root")["MET_pt"])


def test_worker_processes_write_the_same_file(chain: Chain, gen_file: Path, tmp_path: Path) -> None:
    chain.generate(gen_file, tmp_path / "one.root", seed=5, step_size=50)
    chain.generate(gen_file, tmp_path / "two.root", seed=5, step_size=50, processes=2)
    assert_same_output(tmp_path / "one.root", tmp_path / "two.root")
    assert len(read_events(tmp_path / "two.root")) == 240


def test_a_bad_value_in_a_worker_names_the_file_and_entries(chain: Chain, tmp_path: Path) -> None:
    events = synthetic_events(120, seed=2)
    pileup = ak.to_numpy(events.Pileup.nTrueInt).copy()
    pileup[70] = np.nan  # in the second chunk of 40
    bad = ak.with_field(events, ak.with_field(events.Pileup, pileup, "nTrueInt"), "Pileup")
    path = write_events(bad, tmp_path / "bad.root")
    with pytest.raises(FlashsimError, match=r"bad\.root \(entries 40-80\): branch Pileup_nTrueInt: nan in event 30 of the chunk") as info:
        chain.generate(path, tmp_path / "out.root", seed=5, step_size=40, processes=2)
    assert "Traceback" not in str(info.value)
    assert not (tmp_path / "out.root").exists() and not list(tmp_path.glob(".out.root*")), "no output, no temporary"


def test_a_selected_event_comes_out_as_in_the_full_run(chain: Chain, gen_file: Path, tmp_path: Path) -> None:
    chain.generate(gen_file, tmp_path / "full.root", seed=5)
    full = read_events(tmp_path / "full.root")
    picked = [3, 117, 238]
    ids = [(int(full.run[i]), int(full.luminosityBlock[i]), int(full.event[i])) for i in picked]
    assert chain.generate(gen_file, tmp_path / "some.root", seed=5, select=ids) == 3
    some = read_events(tmp_path / "some.root")
    for column in ("Jet", "MET"):
        for field in some[column].fields:
            np.testing.assert_allclose(ak.to_numpy(ak.flatten(some[column][field], axis=None)),
                                       ak.to_numpy(ak.flatten(full[column][field][picked], axis=None)), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{column}.{field}")


def test_partitioned_output_equals_the_single_file_run(chain: Chain, chain_units_dirs, gen_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    from flashsim.distributed import generate_partitions

    chain.generate(gen_file, tmp_path / "single.root", seed=5, step_size=100)
    manifest = generate_partitions(chain_units_dirs, str(gen_file), tmp_path / "parts", seed=5, partition_size=70)
    assert len(manifest.outputs()) == 4
    merged = tmp_path / "merged.root"
    write_events(read_events(manifest.outputs()), merged)
    assert_same_output(tmp_path / "single.root", merged)


@pytest.fixture(scope="module")
def chain_units_dirs(trained_units) -> list[str]:
    return [str(trained_units[n]) for n in ("tinyjet", "tinyfake", "tinymet")]


def test_the_torch_philox_gives_the_same_bits_as_numpy() -> None:
    from flashsim.streams import philox4x32_torch

    rng = np.random.default_rng(1)
    counter, key = rng.integers(0, 2**32, (4, 5000), dtype=np.uint64), rng.integers(0, 2**32, (2, 5000), dtype=np.uint64)
    words = philox4x32_torch(torch.as_tensor(counter.astype(np.int64)), torch.as_tensor(key.astype(np.int64)))
    np.testing.assert_array_equal(words.numpy(), philox4x32(counter, key).astype(np.int64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_and_cpu_draw_the_same_numbers() -> None:
    noise = RowNoise(np.arange(10_000, dtype=np.uint64) * np.uint64(7919))
    cpu = noise.normal(10_000, 15, 2, CPU, torch.float64)
    gpu = noise.normal(10_000, 15, 2, torch.device("cuda"), torch.float64).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-12, atol=1e-12)
