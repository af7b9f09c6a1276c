"""No process-wide side effects, public-API fallbacks and the shared helpers (issue 15 items 9-12, 14)."""

from __future__ import annotations

import copy
import pickle
import sys
import threading
import types
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import crysk._malloc as malloc
import crysk.nn.layers as layers
import crysk.nn.workspace as workspace
from crysk import CGCNNRegressor, CrystalGraphFeaturizer
from crysk._validation import check_number, check_option
from crysk.evaluation import _n_samples, _take
from crysk.nn import CGCNN
from crysk.parallel import map_chunks
from crysk.structures import quiet_warnings

TINY = dict(atom_fea_len=8, n_conv=1, h_fea_len=8, batch_size=20, max_epochs=1, random_state=0)


@pytest.fixture(scope="module")
def gy(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:40], ids=ids[:40]), y[:40]


# ----------------------------------------------------------------------------- item 9
class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(malloc, "_libc", libc)
    monkeypatch.setattr(malloc.sys, "platform", "linux")
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_MAX_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "262144")
    return libc


def test_malloc_settings_are_restored_after_fit(fake_libc, gy):
    CGCNNRegressor(**TINY).fit(*gy)
    settings = [c[1:] for c in fake_libc.calls if c[0] == "mallopt"]
    # applied once on entry, restored on exit (the trim threshold from the environment)
    assert settings == [(malloc._M_MMAP_MAX, 0), (malloc._M_TRIM_THRESHOLD, 2**31 - 1),
                        (malloc._M_MMAP_MAX, 65536), (malloc._M_TRIM_THRESHOLD, 262144)]
    assert fake_libc.calls[-1] == ("trim", 0)  # what training kept is handed back
    assert malloc._depth == 0


def test_malloc_tuning_can_be_switched_off_and_nests(fake_libc, gy):
    CGCNNRegressor(**TINY, malloc_tuning=False).fit(*gy)
    assert fake_libc.calls == []
    with malloc.malloc_tuning() as outer:
        with malloc.malloc_tuning() as inner:
            assert outer and inner
        assert len(fake_libc.calls) == 3  # the inner block neither applied nor restored
    assert len(fake_libc.calls) == 6 and malloc._depth == 0
    with pytest.raises(ValueError, match="malloc_tuning"):
        CGCNNRegressor(**TINY, malloc_tuning="yes").fit(*gy)


# ----------------------------------------------------------------------------- item 10
def _train_step(model, g):
    t = g.to_tensors("cpu").batch(np.arange(len(g)))
    model.train()
    model(**t).sum().backward()


def test_each_model_has_its_own_workspace(gy):
    g, _ = gy
    a, b = CGCNN(atom_fea_len=8, n_conv=1, h_fea_len=8), CGCNN(atom_fea_len=8, n_conv=1, h_fea_len=8)
    assert a.workspace is not b.workspace
    _train_step(a, g)
    _train_step(b, g)
    if workspace.USE_PRIVATE_APIS:
        assert len(a.workspace) and len(b.workspace)
    b.eval()  # releases b's buffers only
    assert len(b.workspace) == 0
    if workspace.USE_PRIVATE_APIS:
        assert len(a.workspace)
    for twin in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert twin.workspace is not a.workspace and len(twin.workspace) == 0
        torch.testing.assert_close(twin.state_dict(), a.state_dict())


def test_nothing_outside_nn_touches_the_workspaces():
    import crysk.estimators.data as data

    assert not hasattr(layers, "_WORKSPACE") and not hasattr(layers, "release_workspace")
    assert "workspace" not in vars(data)


# ----------------------------------------------------------------------------- item 13
def _crysk_imports():
    """Module -> crysk modules it imports (at any depth of the file), from the sources."""
    import ast
    import pathlib

    import crysk

    root = pathlib.Path(crysk.__file__).parent

    def name_of(path):
        parts = path.relative_to(root.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    known = {name_of(p) for p in root.rglob("*.py")}
    graph = {}
    for path in root.rglob("*.py"):
        module = name_of(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                if node.module:
                    deps.add(f"{base}.{node.module}")
                else:  # from . import module_or_name: a name imports the package itself
                    deps |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crysk"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("crysk")}
        graph[module] = deps
    return graph


def test_import_graph_has_no_cycle_and_nothing_imports_the_root():
    graph = _crysk_imports()
    assert [m for m, deps in graph.items() if "crysk" in deps and m != "crysk"] == []

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    # a package's __init__ re-exports its modules; cycles are between modules
    modules = [m for m in graph if m != "crysk"]
    assert sorted(m for m in modules if m in reachable(m)) == []
    # checkpoints know nothing of estimators or transfer; nn knows nothing of scikit-learn
    assert not {d for d in reachable("crysk.checkpoints") if d.startswith(("crysk.estimators", "crysk.transfer"))}
    assert not [d for d in reachable("crysk.nn") if not d.startswith("crysk.nn") and d != "crysk.elements"]


# ----------------------------------------------------------------------------- item 11
def test_public_fallback_matches_the_private_path(gy, monkeypatch):
    if not workspace.USE_PRIVATE_APIS:
        pytest.skip("this torch lacks the private operators; the public path is the only one")
    g, _ = gy
    t = g.to_tensors("cpu").batch(np.arange(len(g)))
    results = []
    for private in (True, False):
        monkeypatch.setattr(workspace, "USE_PRIVATE_APIS", private)
        torch.manual_seed(0)
        model = CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=16)
        model.train()
        out = model(**t)
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        if not private:
            assert len(model.workspace) == 0  # no pooling without the storage counter
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["list", "array", "frame", "graphs"])
def test_rows_are_taken_by_position(kind, gy):
    g, y = gy
    X = {"list": list(y), "array": y, "frame": pd.DataFrame({"y": y}, index=np.arange(len(y))[::-1]), "graphs": g}[kind]
    rows = _take(X, np.array([3, 1]))
    assert _n_samples(X) == len(y) and _n_samples(rows) == 2
    if kind == "graphs":
        assert list(rows.ids) == [g.ids[3], g.ids[1]]
    else:
        np.testing.assert_array_equal(np.asarray(rows).ravel(), y[[3, 1]])


def test_matbench_names_are_checked_with_matminers_public_api():
    from crysk.datasets import load_matbench

    with pytest.raises(ValueError, match="matbench_mp_gap"):
        load_matbench("no_such_task")


# ----------------------------------------------------------------------------- item 12
def test_quiet_warnings_leaves_other_threads_filters_alone():
    before = list(warnings.filters)
    seen = []

    def worker():
        with quiet_warnings():
            seen.append(list(warnings.filters) == before)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [True] and warnings.filters == before
    with quiet_warnings():
        assert warnings.filters != before  # the main thread does silence
    assert warnings.filters == before


def test_released_crysae_leaves_a_users_model_module_alone(data_path, monkeypatch):
    from crysk.checkpoints import read_weights

    writes = []

    class Recording(dict):
        def __setitem__(self, key, value):
            writes.append(key)
            super().__setitem__(key, value)

    mine = types.ModuleType("model")
    monkeypatch.setattr(sys, "modules", Recording(sys.modules))
    sys.modules["model"] = mine
    source = read_weights(data_path / "checkpoints/crysxpp/model_pretrain.pth")
    assert source.kind == "crysae-released" and "embedding.weight" in source.state_dict
    assert sys.modules["model"] is mine and writes == ["model"]  # no stand-in ever replaced it


# ----------------------------------------------------------------------------- item 14
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_map_chunks_keeps_order_and_threshold(n_jobs):
    values = list(range(103))
    seen = []

    def args(start, stop, parallel):
        seen.append(parallel)
        return values[start:stop], start

    # sum(chunk, start) is a builtin, so worker processes can run it
    parts = map_chunks(sum, len(values), args, n_jobs=n_jobs, min_parallel=50, chunks_per_job=3)
    if n_jobs == 1:
        assert parts == [sum(values)] and seen == [False]
    else:
        starts = range(0, 103, 18)  # ceil(103 / (3 chunks x 2 jobs)) = 18 items per chunk
        assert parts == [sum(values[s : s + 18]) + s for s in starts] and seen == [True] * 6
    assert map_chunks(sum, 0, args) == []
    small = map_chunks(sum, 10, lambda a, b, p: (values[a:b], 0), n_jobs=n_jobs, min_parallel=50)
    assert small == [sum(range(10))]


def test_parameter_checks():
    assert check_number("k", 3, integer=True, low=1) == 3
    for bad in (0, 2.5, True, float("nan"), "3"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            check_number("k", bad, integer=True, low=1)
    with pytest.raises(ValueError, match=r"f must be a number in \[0, 1\)"):
        check_number("f", 1.0, low=0, high=1, high_open=True)
    assert check_number("f", None, allow_none=True) is None
    with pytest.raises(ValueError, match="must be one of"):
        check_option("o", np.zeros(2), ["a"])
