"""What can be checked of the GPU path without a GPU.

PyTorch's ``meta`` device stands in for CUDA: its tensors have shapes and no
data, and an operation mixing them with CPU tensors fails. A training step
on ``meta`` therefore proves that batching, forward and backward create no
tensor on the CPU, the property that keeps a CUDA step free of host copies
and device mismatches.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crysk import CGCNNRegressor, CrystalGraphs
from crysk.graphs import GraphTensors
from crysk.nn.cgcnn import CGCNN
from crysk.nn.crysxpp import CrysXPPNet
from crysk.nn.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("net", [CGCNN, CrysXPPNet])
def test_a_training_step_creates_no_cpu_tensor(tmp_path, eform_graphs, mapped, net):
    graphs = eform_graphs[0][:20]
    if mapped:
        graphs = CrystalGraphs.load(graphs.save(tmp_path / "store"), mmap=True)
    batch = GraphTensors(graphs, "meta").batch(np.array([4, 0, 11, 7]))
    assert {t.device.type for t in batch.values()} == {"meta"}
    model = net(atom_fea_len=16, n_conv=2, h_fea_len=16).to("meta").train()
    out = model(**batch)
    out.sum().backward()
    assert out.device.type == "meta" and out.shape[0] == 4
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters() if p.requires_grad)
    assert len(model.workspace) == 0  # the CPU buffer pool hands out nothing off the CPU


def test_cpu_only_tuning_stays_off_off_the_cpu():
    assert CGCNNRegressor()._malloc_tuning_applies()
    assert not CGCNNRegressor(device="cuda")._malloc_tuning_applies()
    assert not CGCNNRegressor(device="cuda:1")._malloc_tuning_applies()
    assert not CGCNNRegressor(malloc_tuning=False)._malloc_tuning_applies()
    pool = Workspace()
    like = torch.empty(0, 8, device="meta")
    assert pool.empty(100, 8, like).device.type == "meta" and len(pool) == 0


@pytest.mark.slow
def test_gpu_check_runs_its_cpu_path(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = tmp_path / "check.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick", "--n-jobs", "2",
         "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SKIPPED the CPU-vs-CUDA comparison" in result.stdout and "[compiled] SKIPPED" in result.stdout
    report = json.loads(out.read_text())
    # CPU against CPU runs the same code on the same device: bit-identical
    assert report["parity"]["max_prediction_difference"] == 0 and report["parity"]["step_difference_relative"] == 0
    assert report["featurize"]["graphs"] > 590 and report["throughput"]["steady_graphs_per_s"] > 0
    assert "| train CGCNN defaults" in result.stdout


def test_cpu_kernels_stay_off_off_the_cpu(eform_graphs, monkeypatch):
    """crysk's fused C++ kernels, switched on, are not called by a step on another device."""
    import types

    from crysk.nn import cpu_kernels

    def refuse(*args):
        raise AssertionError("a CPU kernel was called off the CPU")

    monkeypatch.setattr(cpu_kernels, "_module", types.SimpleNamespace(
        edge_pre_stats=refuse, gate_forward=refuse, gate_backward_sums=refuse, bn_backward_apply=refuse))
    monkeypatch.setattr(cpu_kernels, "_switch", True)
    batch = GraphTensors(eform_graphs[0][:20], "meta").batch(np.array([4, 0, 11, 7]))
    model = CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=16).to("meta").train()
    model(**batch).sum().backward()
    # and on the CPU the same switch does call them (so the stub above would have caught a call)
    cpu = GraphTensors(eform_graphs[0][:20], "cpu").batch(np.array([4, 0, 11, 7]))
    with pytest.raises(AssertionError, match="a CPU kernel was called"):
        CGCNN(atom_fea_len=16, n_conv=2, h_fea_len=16).train()(**cpu).sum().backward()
