"""Time one CGCNN convolution's training forward and backward pass on the real edges of one batch.

The per-edge work of the convolutions is most of a CPU training step; this
times it alone, without the data loading, optimiser and head around it, so
that two versions of the layer can be compared on a shared machine where
whole-epoch figures drift by 20 % from one minute to the next. Run the
checkouts alternately, several times each, and compare the minima and
medians:

    for i in 1 2 3 4 5; do
        PYTHONPATH=/path/to/old python benchmarks/conv_layer.py --threads 1
        PYTHONPATH=/path/to/new python benchmarks/conv_layer.py --threads 1
    done

On a machine whose neighbours change its speed from one minute to the next,
``--against REV`` is the steadier comparison: it loads ``crysk/nn/layers.py``
as of git revision ``REV`` beside the current one, gives both layers the same
weights and batch, alternates their steps in one process and prints the
median of the paired time ratios (current / REV):

    python benchmarks/conv_layer.py --threads 2 --repeats 40 --against main~1
    # fused vs torch: a revision from before the kernels (4d9d94b added them), whose layer cannot use them
    python benchmarks/conv_layer.py --threads 2 --repeats 40 --cpu-kernels --against 9a2cfa1

The batch is the first ``--crystals`` structures of ``mp_gap.jsonl.gz``
(CGCNN defaults: 64-wide atom features, 41 Gaussians, 12 neighbours).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _data import read_jsonl

import crysk
from crysk import CrystalGraphFeaturizer
from crysk.nn.cgcnn import GraphEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crystals", type=int, default=256, help="crystals in the batch (CGCNN's batch size)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--against", metavar="REV", help="git revision whose layer to time alternately with this one")
    parser.add_argument("--cpu-kernels", action="store_true",
                        help="this layer with crysk's fused C++ CPU kernels (crysk.nn.cpu_kernels); a layer from "
                             "--against REV keeps the kernels it had")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    if args.cpu_kernels:
        from crysk.nn import cpu_kernels

        cpu_kernels.enable()

    records = read_jsonl("mp_gap.jsonl.gz", args.crystals)
    graphs = CrystalGraphFeaturizer(errors="skip").transform([r["cif"] for r in records])
    batch = graphs.to_tensors("cpu").batch()
    torch.manual_seed(0)
    encoder = GraphEncoder()  # the layer's inputs as the model makes them: embedded atoms, expanded distances
    encoder.train()
    conv = encoder.convs[0]
    with torch.no_grad():
        h0 = encoder.embedding(encoder.atom_features(batch["atomic_numbers"]))
        edge_fea = encoder.gaussian(batch["distances"])
    h = h0.clone().requires_grad_(True)
    grad = torch.randn_like(h0)

    if args.against:
        compare(args, conv, h0, edge_fea, batch, grad)
        return

    def step() -> None:
        out = conv(h, edge_fea, batch["edge_src"], batch["edge_dst"], encoder.workspace)
        out.backward(grad)

    step()
    step()  # the workspace holds its buffers from here on
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times_ms = 1e3 * np.array(times)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{crysk.__file__.rsplit('/crysk/', 1)[0]}: {len(graphs)} crystals, {len(batch['edge_src']):,} edges, "
        f"{args.threads} thread(s): forward+backward min {times_ms.min():.1f} ms, "
        f"median {np.median(times_ms):.1f} ms (load {load})"
    )


def layers_at(rev: str):
    """The module ``crysk/nn/layers.py`` as of git revision ``rev``, imported under another name."""
    root = Path(crysk.__file__).resolve().parent.parent
    source = subprocess.run(["git", "-C", str(root), "show", f"{rev}:crysk/nn/layers.py"], check=True,
                            capture_output=True, text=True).stdout
    # its relative imports name the installed package's siblings
    source = source.replace("from . import ", "from crysk.nn import ").replace("from .", "from crysk.nn.")
    path = Path(tempfile.mkdtemp()) / "crysk_layers_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("crysk_layers_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def compare(args, conv, h0, edge_fea, batch, grad) -> None:
    """Alternate the steps of this layer and of the one at ``args.against``; print the paired ratio."""
    from crysk.nn.workspace import Workspace

    baseline = layers_at(args.against).ConvLayer(conv.atom_fea_len, conv.nbr_fea_len)
    baseline.load_state_dict(conv.state_dict())
    baseline.train()
    layers = {"current": (conv, Workspace()), args.against: (baseline, Workspace())}

    def step(name: str) -> float:
        layer, workspace = layers[name]
        h = h0.clone().requires_grad_(True)
        t = time.perf_counter()
        layer(h, edge_fea, batch["edge_src"], batch["edge_dst"], workspace).backward(grad)
        return time.perf_counter() - t

    names = list(layers)
    for _ in range(3):
        for name in names:
            step(name)
    times = {name: [] for name in names}
    for i in range(args.repeats):
        for name in names if i % 2 == 0 else names[::-1]:  # each goes first half of the time
            times[name].append(step(name))
    ms = {name: 1e3 * np.array(t) for name, t in times.items()}
    ratio = np.median(ms["current"] / ms[args.against])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{len(batch['edge_src']):,} edges, {args.threads} thread(s), {args.repeats} alternating steps each: "
          + ", ".join(f"{n} median {np.median(t):.1f} ms (min {t.min():.1f})" for n, t in ms.items())
          + f"; median paired ratio current / {args.against}: {ratio:.3f} (load {load})")


if __name__ == "__main__":
    main()
