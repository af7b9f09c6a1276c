"""Data-parallel training of a CGCNN with torchrun (CPU processes with gloo, or GPUs with NCCL).

Rank 0 featurizes once into a graph store; every rank memory-maps it (the
page cache holds one copy), trains on its share of each batch, and rank 0
writes the model. Two CPU processes on the demo data take a minute or two:

    torchrun --nproc_per_node 2 examples/ddp_train.py
    torchrun --nproc_per_node 4 examples/ddp_train.py --device cuda --store /scratch/graphs
    python examples/ddp_train.py                      # one process, no process group

``--batch-size`` is per rank: the global batch is ``world size x batch size``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch.distributed as dist

from crysk import CGCNNRegressor, CrystalGraphFeaturizer, CrystalGraphs
from crysk.demo import make_demo_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each rank takes cuda:LOCAL_RANK)")
    parser.add_argument("--store", default=None, help="graph store directory shared by the ranks")
    parser.add_argument("--batch-size", type=int, default=32, help="crystals per rank and step")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output", default="ddp-model.pt")
    args = parser.parse_args()

    launched = "RANK" in os.environ  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    device = args.device
    if launched:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            device = f"cuda:{os.environ['LOCAL_RANK']}"
    rank = dist.get_rank() if launched else 0
    store = Path(args.store or Path(tempfile.gettempdir()) / "crysk-ddp-example-graphs")

    structures, y = make_demo_data(n=400, random_state=0)
    if rank == 0 and not (store / "header.json").exists():
        CrystalGraphFeaturizer().transform(structures).save(store)
    if launched:
        dist.barrier()  # the store is complete before anyone opens it
    graphs = CrystalGraphs.load(store, mmap=True)
    train, test = slice(0, 300), slice(300, 400)  # slices of a memory map stay memory-mapped

    model = CGCNNRegressor(
        atom_fea_len=32, h_fea_len=32, n_conv=2, batch_size=args.batch_size, max_epochs=args.epochs,
        lr=0.01, validation_fraction=0.1, random_state=0, device=device,
    )
    model.fit(graphs[train], y[train])  # every rank calls fit; DDP is set up inside
    model.save_pretrained(args.output)  # only rank 0 writes
    if rank == 0:
        mae = np.mean(np.abs(model.predict(graphs[test]) - y[test]))
        world = dist.get_world_size() if launched else 1
        print(f"{world} process(es), global batch {world * args.batch_size}: test MAE {mae:.3f}; saved {args.output}")
    if launched:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
