"""Torch's thread count is scoped to each fit and predict and restored afterwards (issue 19, item 1)."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from crysk import CGCNNRegressor, CrystalGraphFeaturizer
from crysk._threads import free_cores, resolve_n_threads, torch_threads


class SeeThreads(Callback):
    def on_epoch_begin(self, net, **kwargs):
        self.seen_ = torch.get_num_threads()


@pytest.fixture(scope="module")
def data(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:30], ids=ids[:30]), y[:30]


@pytest.mark.parametrize("n_threads, expected", [(1, 1), (-1, None)])
def test_fit_and_predict_restore_the_thread_count(data, n_threads, expected):
    g, y = data
    before = torch.get_num_threads()
    seen = SeeThreads()
    model = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, max_epochs=1, batch_size=10, n_threads=n_threads,
                           random_state=0, callbacks=[("seen", seen)])
    model.fit(g, y)
    assert seen.seen_ == (before if expected is None else expected)
    assert torch.get_num_threads() == before
    assert np.isfinite(model.predict(g)).all()
    assert torch.get_num_threads() == before


@pytest.fixture
def fresh_cache(monkeypatch):
    import crysk._threads as threads

    monkeypatch.setattr(threads, "_cached", None)
    return threads


def test_auto_takes_free_cores_at_most_torchs_setting(fresh_cache, monkeypatch, tmp_path):
    threads = fresh_cache
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(threads, "_LOADAVG", str(loadavg))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 2)
    loadavg.write_text("7.00 7.00 7.00 3/120 4242\n")  # 3 runnable, 2 of them ours: 1 neighbour
    assert free_cores() == 3
    monkeypatch.setattr(threads, "_cached", None)
    loadavg.write_text("7.00 7.00 7.00 9/120 4242\n")
    assert free_cores() == 1
    assert resolve_n_threads(None) == 1
    with pytest.raises(ValueError, match="n_threads must be"):
        resolve_n_threads(0)


def test_own_recent_work_is_not_a_neighbour(fresh_cache, monkeypatch, tmp_path):
    # The 1-minute load average counts this process's own last fit; right after
    # one, an idle machine must still offer every core.
    threads = fresh_cache
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.00 2.00 2.00 1/120 4242\n")  # only the caller itself runs now
    monkeypatch.setattr(threads, "_LOADAVG", str(loadavg))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert free_cores() == 2


def test_falls_back_to_the_load_average_without_proc(fresh_cache, monkeypatch, tmp_path):
    threads = fresh_cache
    monkeypatch.setattr(threads, "_LOADAVG", str(tmp_path / "missing"))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 4)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    assert free_cores() == 3


def test_a_spinning_neighbour_is_seen(fresh_cache):
    import subprocess
    import sys
    import time

    threads = fresh_cache
    if threads._runnable_elsewhere() is None:
        pytest.skip("no /proc/loadavg on this platform")
    assert threads._own_running_threads() >= 1  # the calling thread itself
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads._runnable_elsewhere() >= 1
    finally:
        spinner.kill()
        spinner.wait()


def test_the_answer_is_cached_briefly(fresh_cache, monkeypatch):
    threads = fresh_cache
    calls = []
    monkeypatch.setattr(threads, "_runnable_elsewhere", lambda: calls.append(1) or 0)
    free_cores()
    free_cores()
    assert len(calls) == 1


def test_torch_threads_restores_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError
    assert torch.get_num_threads() == before


class RecordThreads(Callback):
    def on_train_begin(self, net, **kwargs):
        self.seen_ = []

    def on_epoch_begin(self, net, **kwargs):
        self.seen_.append(torch.get_num_threads())


@pytest.fixture
def two_threads():
    """torch at 2 threads for the test, its own setting back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fit_under_load(data, monkeypatch, free: list[int], max_epochs: int):
    """A tiny CGCNN fitted while ``free_cores()`` answers ``free`` in turn; the model and its threads per epoch."""
    import crysk._threads as threads

    g, y = data
    answers = iter(free)
    monkeypatch.setattr(threads, "free_cores", lambda: next(answers))
    seen = RecordThreads()
    model = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, max_epochs=max_epochs, batch_size=10,
                           random_state=0, callbacks=[("seen", seen)])
    return model.fit(g, y), seen


def test_auto_threads_follow_the_load_from_epoch_to_epoch(data, monkeypatch, two_threads):
    # a long fit outlives the load it started under: each epoch takes the cores free at its start,
    # never more than torch's own setting, and torch's setting comes back afterwards
    import crysk._threads as threads

    g, y = data
    model, seen = fit_under_load(data, monkeypatch, [1, 1, 2, 2, 1, 8], max_epochs=5)  # the fit's start, epochs 1-5
    assert seen.seen_ == [1, 2, 2, 1, 2]
    assert torch.get_num_threads() == 2
    # an explicit count is kept whatever the load
    model.set_params(n_threads=1, max_epochs=3)
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    model.fit(g, y)
    assert seen.seen_ == [1, 1, 1]


def test_a_fit_that_changes_threads_mid_way_still_restores_torchs_setting(data, monkeypatch, two_threads):
    # starts on torch's own count (nothing to set), then an epoch sees a busy machine and drops to one thread:
    # the fit must still hand torch's setting back
    _, seen = fit_under_load(data, monkeypatch, [2, 2, 1, 1], max_epochs=3)
    assert seen.seen_ == [2, 1, 1]
    assert torch.get_num_threads() == 2
