"""Data-parallel training: 2 processes (gloo, CPU) with batch b each against 1 process with batch 2b."""

import os
import socket

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from crysk import CGCNNRegressor
from crysk.distributed import shard_rows
from crysk.nn import cpu_kernels
from crysk.estimators.data import GraphBatchIterator

PARAMS = dict(
    atom_fea_len=16, h_fea_len=16, n_conv=2, max_epochs=2, lr=0.005, validation_fraction=None, random_state=0,
    n_threads=1,
)
B = 8  # crystals per rank; the single process uses 2 * B


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(batch_size, **extra):
    return CGCNNRegressor(batch_size=batch_size, **{**PARAMS, **extra})


def _flat_weights(model) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.module_.parameters()])


def _worker(rank, world, port, graphs, y, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _fit(B).fit(graphs, y)
        np.save(os.path.join(out, f"pred{rank}.npy"), model.predict(graphs))
        np.save(os.path.join(out, f"weights{rank}.npy"), _flat_weights(model))
        model.save_pretrained(os.path.join(out, f"rank{rank}.pt"))
        np.save(os.path.join(out, f"steps{rank}.npy"), np.array(len(model.history[-1]["batches"])))
        np.save(os.path.join(out, f"kernels{rank}.npy"), np.array(cpu_kernels._module is not None))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data(eform_graphs):
    graphs, y = eform_graphs
    return graphs[:50], y[:50]


@pytest.mark.parametrize("kernels", [False, True], ids=["torch-kernels", "cpu-kernels"])
def test_two_ranks_with_batch_b_match_one_process_with_batch_2b(tmp_path, data, kernels, monkeypatch):
    """Also with crysk's fused CPU kernels, whose batch-norm sums are all-reduced between their passes."""
    graphs, y = data
    monkeypatch.setattr(cpu_kernels, "_switch", None)  # the spawned ranks and this process read the variable
    monkeypatch.setenv(cpu_kernels.ENV_VAR, "1" if kernels else "0")
    if kernels:
        try:
            cpu_kernels.build()
        except RuntimeError as exc:
            pytest.skip(str(exc))
    mp.spawn(_worker, args=(2, _free_port(), graphs, y, str(tmp_path)), nprocs=2, join=True)
    load = lambda name: np.load(tmp_path / name)  # noqa: E731
    # the ranks end with the same model
    np.testing.assert_array_equal(load("pred0.npy"), load("pred1.npy"))
    np.testing.assert_array_equal(load("weights0.npy"), load("weights1.npy"))
    assert bool(load("kernels0.npy")) == bool(load("kernels1.npy")) == kernels
    # Stated tolerance: batch-norm statistics summed over the ranks make each step the 1-process step on the
    # global batch up to float32 rounding (other summation orders, plain ops instead of fused kernels), which
    # 8 steps amplify a little: predictions within 1e-4 eV/atom, weights within 1e-3 of how far they moved.
    single = _fit(2 * B).fit(graphs, y)
    np.testing.assert_allclose(load("pred0.npy"), single.predict(graphs), rtol=0, atol=1e-4)
    start = _flat_weights(_fit(2 * B, max_epochs=0).fit(graphs, y))
    moved = np.linalg.norm(_flat_weights(single) - start)
    differ = np.linalg.norm(load("weights0.npy") - _flat_weights(single))
    assert differ < 1e-3 * moved, (differ, moved)
    # the split matters: one process with batch b (not 2b) ends elsewhere
    half = _flat_weights(_fit(B).fit(graphs, y))
    assert np.linalg.norm(half - _flat_weights(single)) > 100 * differ

    # 50 crystals in global batches of 16: 4 steps per epoch on each rank, as in the single process
    assert int(load("steps0.npy")) == int(load("steps1.npy")) == len(single.history[-1]["batches"]) == 4
    # only rank 0 writes checkpoints
    assert (tmp_path / "rank0.pt").is_file() and not (tmp_path / "rank1.pt").exists()


def test_shards_cover_each_global_batch_once():
    rows = np.arange(37)
    for world in (1, 2, 3, 5):
        parts = [shard_rows(rows, r, world) for r in range(world)]
        assert np.array_equal(np.concatenate(parts), rows)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sharded_iterator_steps_alike_on_every_rank(eform_graphs):
    from crysk.estimators.data import GraphDataset

    graphs, y = eform_graphs
    dataset = GraphDataset.from_graphs(graphs[:21], y[:21], "cpu")
    seen = []
    for rank in range(2):
        it = GraphBatchIterator(dataset, 10, shuffle=True, generator=np.random.default_rng(3), shard=(rank, 2))
        batches = list(it)
        assert len(batches) == len(it) == 2  # the last global batch (1 crystal) cannot be split: dropped
        seen.append(np.concatenate([yb.numpy() for _, yb in batches]))
    order = np.random.default_rng(3).permutation(21)[:20]
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.sort(y[:21][order].astype(np.float32)))


def test_without_a_process_group_nothing_changes():
    assert not dist.is_initialized()
    from crysk.distributed import is_distributed, rank, world_size

    assert (is_distributed(), rank(), world_size()) == (False, 0, 1)
