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


def test_auto_takes_free_cores_at_most_torchs_setting(monkeypatch):
    import crysk._threads as threads

    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.2, 0.0, 0.0))
    monkeypatch.setattr(threads, "_cpu_count", lambda: 4)
    assert free_cores() == 3
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert free_cores() == 1
    assert resolve_n_threads(None) == 1
    with pytest.raises(ValueError, match="n_threads must be"):
        resolve_n_threads(0)


def test_torch_threads_restores_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError
    assert torch.get_num_threads() == before
