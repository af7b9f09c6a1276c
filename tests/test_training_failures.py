"""Training that goes wrong: NaN/inf losses stop the fit; interrupted fits resume (issue 19, item 12)."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

import crysk
from crysk import CGCNNRegressor, CheckpointError, CrysAE, CrystalGraphFeaturizer
from crysk.estimators import NonFiniteLossError, SaveBestCheckpoint

FAST = dict(atom_fea_len=16, n_conv=1, h_fea_len=16, batch_size=20, random_state=0)


@pytest.fixture(scope="module")
def data(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:100], ids=ids[:100]), y[:100]


class PoisonAt(Callback):
    """Put a NaN into one weight at the start of an epoch (what a too-high lr ends in)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.epoch:
            with torch.no_grad():
                net.module_.fc_out.weight[0, 0] = float("nan")


def test_nan_loss_stops_at_once_and_keeps_best_weights(data):
    g, y = data
    model = CGCNNRegressor(**FAST, max_epochs=10, callbacks=[("poison", PoisonAt(4))])
    with pytest.raises(NonFiniteLossError, match=r"epoch 4, batch 1 \(lr 0\.01\).*lr ten times smaller, or "
                       r"optimizer='adam'") as info:
        model.fit(g, y)
    assert (info.value.epoch, info.value.batch, info.value.lr) == (4, 1, 0.01)
    assert len(model.history) == 4  # stopped at once, not after 10 epochs
    assert model.best_epoch_ in (1, 2, 3)
    assert "best epoch so far" in str(info.value)
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())
    assert np.isfinite(model.predict(g[:10])).all()


def test_diverging_lr_raises_before_weights_turn_nan(data):
    g, y = data
    model = CGCNNRegressor(**{**FAST, "lr": 1e12}, max_epochs=5, validation_fraction=None)
    with pytest.raises(NonFiniteLossError, match="lr 1e\\+12") as info:
        model.fit(g, y)
    assert info.value.epoch == 1
    assert all(torch.isfinite(p).all() for p in model.module_.parameters())


def test_diverging_adam_fit_is_not_told_to_use_adam(data):
    g, y = data
    model = CGCNNRegressor(**FAST, optimizer="adam", max_epochs=3, callbacks=[("poison", PoisonAt(1))])
    with pytest.raises(NonFiniteLossError, match="lr ten times smaller") as info:
        model.fit(g, y)
    assert "optimizer='adam'" not in str(info.value)


class InterruptAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt


def _lrs(model):
    return {row["epoch"]: row["event_lr"] for row in model.history}


def test_resume_continues_schedule_and_never_replaces_a_better_checkpoint(data, tmp_path):
    g, y = data
    params = dict(**FAST, max_epochs=8, lr_milestones=(3, 6))
    full = CGCNNRegressor(**params).fit(g, y)

    path = tmp_path / "best.pt"
    first = CGCNNRegressor(**params, callbacks=[("save", SaveBestCheckpoint(path)), ("stop", InterruptAfter(5))])
    first.fit(g, y)
    assert len(first.history) == 5
    saved = crysk.load(path)
    done = saved.best_epoch_
    best_before = min(row["valid_mae"] for row in first.history)

    resumed = CGCNNRegressor(**params, callbacks=[("save", SaveBestCheckpoint(path))]).fit(g, y, resume_from=path)
    epochs = [row["epoch"] for row in resumed.history]
    assert epochs == list(range(done + 1, 9))
    # the learning rate of each epoch is the uninterrupted run's
    full_lrs = _lrs(full)
    assert all(np.isclose(lr, full_lrs[e]) for e, lr in _lrs(resumed).items())
    # the final model is the best epoch of the whole run, and the checkpoint never got worse
    final_ckpt = crysk.load(path)
    best_after = min([best_before] + [row["valid_mae"] for row in resumed.history])
    assert resumed.best_epoch_ == final_ckpt.best_epoch_
    np.testing.assert_allclose(final_ckpt.predict(g[:10]), resumed.predict(g[:10]), atol=1e-6)
    mae = {row["epoch"]: row["valid_mae"] for row in [*first.history, *resumed.history]}
    assert np.isclose(mae[resumed.best_epoch_], best_after)


def test_resume_when_no_epoch_improves_keeps_the_checkpoint(data, tmp_path):
    g, y = data
    params = dict(**FAST, max_epochs=3)
    path = tmp_path / "best.pt"
    CGCNNRegressor(**params, callbacks=[("save", SaveBestCheckpoint(path))]).fit(g, y)
    before = crysk.load(path)
    # max_epochs already reached: nothing to train, the checkpoint's weights are the result
    again = CGCNNRegressor(**params).fit(g, y, resume_from=path)
    assert len(again.history) == 0 and again.best_epoch_ == before.best_epoch_
    np.testing.assert_array_equal(again.predict(g[:10]), before.predict(g[:10]))


def test_resume_refuses_a_checkpoint_of_another_model(data, tmp_path):
    g, y = data
    path = CrysAE(atom_fea_len=16, n_conv=1, batch_size=50, max_epochs=1, random_state=0).fit(g[:40]).save_pretrained(
        tmp_path / "ae.pt"
    )
    with pytest.raises(CheckpointError, match="cannot resume a CGCNNRegressor.*warm_start_from"):
        CGCNNRegressor(**FAST, max_epochs=2).fit(g, y, resume_from=path)


def _adam_steps(model) -> set[int]:
    return {int(s["step"]) for s in model.optimizer_.state.values()}


def test_resume_with_the_optimizer_state_continues_adams_moments(data, tmp_path):
    g, y = data
    params = dict(**FAST, max_epochs=6, optimizer="adam", lr=0.003)
    first = CGCNNRegressor(**params, callbacks=[("stop", InterruptAfter(3))]).fit(g, y)
    (steps,) = _adam_steps(first)  # one Adam step per batch
    per_epoch = sum("train_loss" in b for b in first.history[-1]["batches"])
    assert steps == 3 * per_epoch
    with_state = first.save_pretrained(tmp_path / "with.pt", include_optimizer=True)
    weights_only = first.save_pretrained(tmp_path / "weights.pt")
    assert with_state.stat().st_size > 2 * weights_only.stat().st_size  # the moments: twice the weights
    resumed = CGCNNRegressor(**params).fit(g, y, resume_from=with_state)
    n_resumed = len(resumed.history)
    assert [row["epoch"] for row in resumed.history] == list(range(7 - n_resumed, 7))
    assert _adam_steps(resumed) == {steps + per_epoch * n_resumed}  # the moments went on from there
    restarted = CGCNNRegressor(**params).fit(g, y, resume_from=weights_only)
    assert _adam_steps(restarted) == {per_epoch * n_resumed}  # weights only: the moments started again from zero
    # the learning rate stays the new fit's, not the one stored with the state
    assert resumed.optimizer_.param_groups[0]["lr"] == pytest.approx(0.003)
