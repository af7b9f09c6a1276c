"""joblib's Dask backend on a 2-worker LocalCluster: featurizing and a grid search run on its workers."""

import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

from crysk import CGCNNRegressor, CrystalGraphFeaturizer  # noqa: E402


# A lambda travels by value (cloudpickle): a function of this module would make each worker import
# this test module, which imports the estimators and with them torch.
_torch_imported = lambda: "torch" in sys.modules  # noqa: E731


def _ran_tasks(stream) -> set:
    return {t["key"] if isinstance(t["key"], str) else str(t["key"]) for t in stream.data}


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50,
        # workers stay at one thread each, like the CPU they would have on a cluster node
        env={"OMP_NUM_THREADS": "1"},
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_featurizing_runs_on_the_workers_without_torch(client, eform_records):
    cifs = [r["cif"] for r in eform_records[:80]]  # above the featurizer's threshold for going parallel
    expected = CrystalGraphFeaturizer().transform(cifs)
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        graphs = CrystalGraphFeaturizer(n_jobs=-1).transform(cifs)
    for name in ("atomic_numbers", "degrees", "neighbors", "distances", "atom_offsets"):
        np.testing.assert_array_equal(getattr(graphs, name), getattr(expected, name))
    tasks = _ran_tasks(stream)
    assert any("featurize_chunk" in key for key in tasks), tasks
    # both workers took part, and neither needed torch to featurize
    assert len({t["worker"] for t in stream.data}) == 2
    assert client.run(_torch_imported) == {w: False for w in client.scheduler_info()["workers"]}


def test_grid_search_runs_on_the_workers(client, eform_graphs):
    from sklearn.model_selection import GridSearchCV

    graphs, y = eform_graphs
    graphs, y = graphs[:40], y[:40]
    small = CGCNNRegressor(
        atom_fea_len=8, h_fea_len=8, n_conv=1, max_epochs=1, batch_size=16, validation_fraction=None, random_state=0
    )
    grid = {"lr": [0.005, 0.02]}
    with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        search = GridSearchCV(small, grid, cv=2, scoring="neg_mean_absolute_error", n_jobs=-1).fit(graphs, y)
    assert len({t["worker"] for t in stream.data}) == 2
    # the same search in this process gives the same scores: the cluster changes where, not what
    local = GridSearchCV(small, grid, cv=2, scoring="neg_mean_absolute_error").fit(graphs, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-5)
