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

The batch is the first ``--crystals`` structures of ``mp_gap.jsonl.gz``
(CGCNN defaults: 64-wide atom features, 41 Gaussians, 12 neighbours).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

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
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

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


if __name__ == "__main__":
    main()
