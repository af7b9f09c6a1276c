"""Neighbour parity: crysk's graphs against the original CGCNN/CrysXPP neighbour rule.

The reference rule, as the original codes' ``CIFData`` apply it: parse the CIF
with pymatgen (``Structure.from_str``), take ``get_all_neighbors(radius)``, sort
each atom's list with Python's stable ``sorted(key=distance)`` and keep the
first ``max_num_nbr``. This script implements that rule plainly (for speed it
reads the per-atom lists from ``get_neighbor_list``, the arrays
``get_all_neighbors`` is built from, and checks that shortcut against
``get_all_neighbors`` itself on the first ``--verify`` structures) and compares,
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


def _parse(cif: str):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def reference_neighbours(structure, radius: float, max_num_nbr: int) -> list[Counter]:
    """The original rule: get_all_neighbors, Python's stable sort on distance, first k."""
    out = []
    for nbrs in structure.get_all_neighbors(radius):
        kept = sorted(nbrs, key=lambda x: x[1])[:max_num_nbr]
        # distances as crysk stores them (float32), so equal pairs compare equal
        out.append(Counter((int(nb.index), float(np.float32(nb.nn_distance))) for nb in kept))
    return out


def reference_neighbours_fast(structure, radius: float, max_num_nbr: int) -> list[Counter]:
    """The same rule from ``get_neighbor_list``, the arrays get_all_neighbors is built from.

    get_all_neighbors groups get_neighbor_list's output by centre in output
    order (dropping only coincident identical sites, which crysk rejects), so
    the per-atom lists, and hence the stable sort, are the same; it avoids one
    Python object per pair (~40x faster). ``--verify`` checks the equality.
    """
    centers, points, _, dist = structure.get_neighbor_list(radius)
    per_atom: list[list] = [[] for _ in range(len(structure))]
    for c, p, d in zip(centers.tolist(), points.tolist(), dist.tolist()):
        per_atom[c].append((p, d))
    return [
        Counter((p, float(np.float32(d))) for p, d in sorted(nbrs, key=lambda x: x[1])[:max_num_nbr])
        for nbrs in per_atom
    ]


def crysk_neighbours(cifs: list[str], radius: float, max_num_nbr: int) -> list[list[Counter] | None]:
    """crysk's rule, from the same CIF texts: per crystal, one set per atom (None if crysk rejects it)."""
    from crysk.featurizer import CrystalGraphFeaturizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rejected ones are counted below
        graphs = CrystalGraphFeaturizer(radius=radius, max_num_nbr=max_num_nbr, errors="skip").transform(
            cifs, ids=list(range(len(cifs)))
        )
    out: list[list[Counter] | None] = [None] * len(cifs)
    for i, pos in enumerate(graphs.ids):
        a0, a1 = graphs.atom_offsets[i], graphs.atom_offsets[i + 1]
        e0 = int(graphs.degrees[:a0].sum(dtype=np.int64))
        per_atom = []
        for deg in graphs.degrees[a0:a1].tolist():
            nbr, dist = graphs.neighbors[e0 : e0 + deg], graphs.distances[e0 : e0 + deg]
            per_atom.append(Counter((int(j), float(d)) for j, d in zip(nbr, dist)))
            e0 += deg
        out[int(pos)] = per_atom
    return out


def compare_chunk(records, radius, max_num_nbr, verify):
    """Count the atoms whose neighbour set differs, in a chunk of (position, id, cif) records.

    For records at positions below ``verify`` the fast reference is also
    checked against the plain get_all_neighbors one.
    """
    got_all = crysk_neighbours([cif for _, _, cif in records], radius, max_num_nbr)
    n_atoms, n_verified, n_unverified = 0, 0, 0
    differing, rejected = [], []
    for (pos, rid, cif), got in zip(records, got_all):
        if got is None:
            # crysk refuses it (an atom with no neighbour in range, atoms too close): a
            # clear error, not a different graph
            rejected.append(rid)
            continue
        structure = _parse(cif)
        ref = reference_neighbours_fast(structure, radius, max_num_nbr)
        if pos < verify:
            n_verified += 1
            n_unverified += reference_neighbours(structure, radius, max_num_nbr) != ref
        n_atoms += len(ref)
        bad = sum(a != b for a, b in zip(ref, got)) + abs(len(ref) - len(got))
        if bad:
            differing.append((rid, bad))
    return len(records), n_atoms, differing, n_verified, n_unverified, rejected


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
    parser.add_argument(
        "--verify", type=int, default=2000,
        help="also run the plain get_all_neighbors reference on the first N structures of each set",
    )
    parser.add_argument("--radius", type=float, default=8.0)
    parser.add_argument("--max-num-nbr", type=int, default=12)
    args = parser.parse_args(argv)
    import pymatgen.core

    print(f"pymatgen {pymatgen.core.__version__}; radius {args.radius} Å, {args.max_num_nbr} neighbours")
    print("| data set | structures | atoms | atoms differing | crystals affected | time (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.datasets:
        t0 = time.perf_counter()
        records = ((pos, rid, cif) for pos, (rid, cif) in enumerate(read_records(os.path.join(DATA, FILES[name]), args.limit)))
        chunks = iter(lambda: list(itertools.islice(records, args.chunk)), [])
        results = Parallel(n_jobs=args.n_jobs)(
            delayed(compare_chunk)(c, args.radius, args.max_num_nbr, args.verify) for c in chunks
        )
        n_struct = sum(r[0] for r in results)
        n_atoms = sum(r[1] for r in results)
        differing = [d for r in results for d in r[2]]
        n_bad = sum(b for _, b in differing)
        elapsed = time.perf_counter() - t0
        print(f"| {name} | {n_struct:,} | {n_atoms:,} | {n_bad} | {len(differing)} | {elapsed:.0f} |", flush=True)
        if differing:
            print(f"  first affected: {differing[:10]}")
        n_verified, n_unverified = sum(r[3] for r in results), sum(r[4] for r in results)
        rejected = [rid for r in results for rid in r[5]]
        print(f"  rejected by crysk with a CrystalInputError (not compared): {len(rejected)} {rejected[:10]}")
        print(f"  fast reference checked against get_all_neighbors on {n_verified:,} structures: {n_unverified} differ")


if __name__ == "__main__":
    main()
