"""Quick start on data crysk makes itself: no downloads, no shared data.

Builds a few hundred strained rock-salt and CsCl-type crystals with pymatgen,
featurizes them into crystal graphs and prints what came out.

    python examples/quickstart.py
"""

from __future__ import annotations

import time

from crysk import CrystalGraphFeaturizer
from crysk.demo import make_demo_data


def main() -> None:
    structures, y = make_demo_data(n=300, random_state=0)
    t = time.perf_counter()
    graphs = CrystalGraphFeaturizer().fit_transform(structures)
    dt = time.perf_counter() - t
    print(graphs)
    print(f"featurized {len(graphs)} crystals in {dt:.2f} s ({len(graphs) / dt:,.0f}/s), "
          f"{graphs.nbytes / len(graphs):,.0f} bytes each")
    print(f"target (volume per atom, Å^3): mean {y.mean():.2f}, std {y.std():.2f}")


if __name__ == "__main__":
    main()
