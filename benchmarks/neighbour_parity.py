"""Neighbour parity: crysk's graphs against the original CGCNN/CrysXPP neighbour rule.

The reference rule, as the original codes' ``CIFData`` apply it: parse the CIF
with pymatgen (``Structure.from_str``), take ``get_all_neighbors(radius)``, sort
each atom's list with Python's stable ``sorted(key=distance)`` and keep the
first ``max_num_nbr``. This script implements that rule plainly and compares,
atom by atom, the *set* of (neighbour index, distance) pairs with the graphs
``CrystalGraphFeaturizer`` makes from the same CIF text (its default path,
gemmi for P1 CIFs).

Usage::

    python benchmarks/neighbour_parity.py                    # all of mp_gap and mp_eform
    python benchmarks/neighbour_parity.py --limit 2000       # the first 2,000 of each
    python benchmarks/neighbour_parity.py --n-jobs 2

It prints, per data set, the number of structures and atoms compared, the
atoms whose neighbour set differs (goal: 0), the crystals affected and the
run time.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import sys
import time
import warnings
from collections import Counter

import numpy as np
from joblib import Parallel, delayed

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

DATA = os.environ.get("CRYSK_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
FILES = {"mp_gap": "mp_gap.jsonl.gz", "mp_eform": "mp_eform.jsonl.gz"}


def reference_neighbours(cif: str, radius: float, max_num_nbr: int) -> list[Counter]:
    """The original rule: pymatgen parse, get_all_neighbors, stable sort, first k."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = Structure.from_str(cif, fmt="cif")
    out = []
    for nbrs in structure.get_all_neighbors(radius):
        kept = sorted(nbrs, key=lambda x: x[1])[:max_num_nbr]
        # distances as crysk stores them (float32), so equal pairs compare equal
        out.append(Counter((int(nb.index), float(np.float32(nb.nn_distance))) for nb in kept))
    return out


def crysk_neighbours(cifs: list[str], radius: float, max_num_nbr: int) -> list[list[Counter]]:
    """crysk's rule, from the same CIF texts: one list of per-atom sets per crystal."""
    from crysk.featurizer import CrystalGraphFeaturizer

    graphs = CrystalGraphFeaturizer(radius=radius, max_num_nbr=max_num_nbr).fit_transform(cifs)
    out = []
    for i in range(len(graphs)):
        a0, a1 = graphs.atom_offsets[i], graphs.atom_offsets[i + 1]
        e0 = int(graphs.degrees[:a0].sum(dtype=np.int64))
        per_atom = []
        for deg in graphs.degrees[a0:a1].tolist():
            nbr, dist = graphs.neighbors[e0 : e0 + deg], graphs.distances[e0 : e0 + deg]
            per_atom.append(Counter((int(j), float(d)) for j, d in zip(nbr, dist)))
            e0 += deg
        out.append(per_atom)
    return out


def compare_chunk(records, radius, max_num_nbr):
    """Count the atoms whose neighbour set differs, in a chunk of (id, cif) records."""
    got_all = crysk_neighbours([cif for _, cif in records], radius, max_num_nbr)
    n_atoms = 0
    differing = []
    for (rid, cif), got in zip(records, got_all):
        ref = reference_neighbours(cif, radius, max_num_nbr)
        n_atoms += len(ref)
        bad = sum(a != b for a, b in zip(ref, got)) + abs(len(ref) - len(got))
        if bad:
            differing.append((rid, bad))
    return len(records), n_atoms, differing


def read_records(path, limit=None):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in itertools.islice(f, limit):
            rec = json.loads(line)
            yield rec["id"], rec["cif"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(FILES), choices=list(FILES))
    parser.add_argument("--limit", type=int, default=None, help="first N records of each data set")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--radius", type=float, default=8.0)
    parser.add_argument("--max-num-nbr", type=int, default=12)
    args = parser.parse_args(argv)
    import pymatgen.core

    print(f"pymatgen {pymatgen.core.__version__}; radius {args.radius} Å, {args.max_num_nbr} neighbours")
    print("| data set | structures | atoms | atoms differing | crystals affected | time (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        t0 = time.perf_counter()
        records = read_records(os.path.join(DATA, FILES[name]), args.limit)
        chunks = iter(lambda: list(itertools.islice(records, args.chunk)), [])
        results = Parallel(n_jobs=args.n_jobs)(
            delayed(compare_chunk)(c, args.radius, args.max_num_nbr) for c in chunks
        )
        n_struct = sum(r[0] for r in results)
        n_atoms = sum(r[1] for r in results)
        differing = [d for r in results for d in r[2]]
        n_bad = sum(b for _, b in differing)
        elapsed = time.perf_counter() - t0
        print(f"| {name} | {n_struct:,} | {n_atoms:,} | {n_bad} | {len(differing)} | {elapsed:.0f} |", flush=True)
        if differing:
            print(f"  first affected: {differing[:10]}")


if __name__ == "__main__":
    main()
