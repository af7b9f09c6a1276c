"""Fuzzed inputs: every case featurizes or raises CrystalInputError naming the structure (issue 19, item 11).

Hypothesis mutates real Materials Project CIF texts (truncations, byte flips,
huge/negative/NaN lattice parameters, missing loops, duplicate labels,
non-UTF-8 bytes) and builds pymatgen and ASE objects with NaN coordinates,
flat or tiny cells and overlapping atoms. The default run tries a bounded
number of cases per strategy; ``-m slow`` runs many more. The cases tried are
counted in ``CASES`` and printed at the end of each test (``pytest -s``).
"""

from __future__ import annotations

import collections
import gzip
import itertools
import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crysk import CrystalGraphFeaturizer, CrystalInputError

from conftest import data_dir

FAST = 40  # examples per strategy in the default suite
SLOW = 600  # under -m slow
CASES: collections.Counter = collections.Counter()
ID = "fuzz-42"


def _seed_cifs() -> list[str]:
    with gzip.open(data_dir() / "mp_eform.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line)["cif"] for line in itertools.islice(fh, 6)]


SEEDS = _seed_cifs()


def check(item, kind: str) -> None:
    """The contract: one graph out, or a CrystalInputError that names the structure."""
    CASES[kind] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            graphs = CrystalGraphFeaturizer().transform([item], ids=[ID])
        except CrystalInputError as exc:
            CASES[kind + ": CrystalInputError"] += 1
            assert ID in str(exc), str(exc)
            return
    assert len(graphs) == 1
    assert np.isfinite(graphs.distances).all()
    CASES[kind + ": featurized"] += 1


# ----------------------------------------------------------------------------- CIF text
_NUMBER_LINE = re.compile(r"^(_cell_(?:length_[abc]|angle_\w+))\s+(\S+)", re.M)
_BAD_NUMBERS = st.sampled_from(["0", "-5.0", "1e308", "1e-300", "nan", "inf", "-inf", "?", ".", "abc", "1e9"])


@st.composite
def mutated_cif(draw) -> str | bytes:
    text = draw(st.sampled_from(SEEDS))
    ops = draw(st.lists(st.sampled_from(["truncate", "flip", "lattice", "drop_loop", "dup_label",
                                         "non_utf8", "drop_lines", "empty_atoms"]), min_size=1, max_size=3))
    data = text.encode()
    for op in ops:
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "flip":
            for _ in range(draw(st.integers(1, 8))):
                if data:
                    pos = draw(st.integers(0, len(data) - 1))
                    data = data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
        elif op == "lattice":
            txt = data.decode("utf-8", errors="replace")
            fields = _NUMBER_LINE.findall(txt)
            if fields:
                name, _ = draw(st.sampled_from(fields))
                txt = re.sub(rf"^{name}\s+\S+", f"{name} {draw(_BAD_NUMBERS)}", txt, flags=re.M)
            data = txt.encode()
        elif op == "drop_loop":
            data = data.replace(b"loop_", b"", draw(st.integers(1, 3)))
        elif op == "dup_label":
            lines = data.split(b"\n")
            atom_lines = [k for k, line in enumerate(lines) if re.match(rb"^\s*[A-Z][a-z]?\s+[A-Z][a-z]?\d+\s", line)]
            if atom_lines:
                k = draw(st.sampled_from(atom_lines))
                lines.insert(k, lines[k])
            data = b"\n".join(lines)
        elif op == "non_utf8":
            pos = draw(st.integers(0, len(data)))
            data = data[:pos] + draw(st.binary(min_size=1, max_size=6).filter(_not_utf8)) + data[pos:]
        elif op == "drop_lines":
            lines = data.split(b"\n")
            if lines:
                k = draw(st.integers(0, len(lines) - 1))
                del lines[k: k + draw(st.integers(1, 5))]
            data = b"\n".join(lines)
        elif op == "empty_atoms":
            cut = data.find(b"_atom_site_occupancy")
            if cut >= 0:
                data = data[: data.find(b"\n", cut) + 1]
    # as text when it decodes (the common case), else as raw bytes
    try:
        out = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    return out if "\n" in out else out + "\n"


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                 database=None, derandomize=True)


@settings(max_examples=FAST, **_SETTINGS)
@given(mutated_cif())
def test_fuzzed_cif_text(item):
    check(item, "CIF text")


@pytest.mark.slow
@settings(max_examples=SLOW, **{**_SETTINGS, "derandomize": False})
@given(mutated_cif())
def test_fuzzed_cif_text_long(item):
    check(item, "CIF text (slow)")


# ----------------------------------------------------------------------------- structure objects
_COORD = st.floats(-2, 2, allow_nan=False)
# mostly sensible cell edges, so that the featurizing path is fuzzed too, and some absurd ones
_LENGTH = st.one_of(st.floats(2.5, 15), st.floats(2.5, 15), st.floats(2.5, 15),
                    st.sampled_from([0.0, 1e-6, 0.3, -4.0, float("nan"), 1e6]))


@st.composite
def lattice_and_sites(draw):
    matrix = np.diag([draw(_LENGTH) for _ in range(3)])
    shear = draw(st.integers(0, 5))
    if shear >= 3:  # a sheared cell
        matrix[2] = matrix[2] + matrix[0] * draw(st.floats(-1, 1)) + matrix[1] * draw(st.floats(-1, 1))
    elif shear == 2:  # a flat (or nearly flat) cell
        matrix[2] = matrix[0] * draw(st.floats(-1, 1)) + matrix[1] * draw(st.floats(-1, 1)) + draw(st.floats(0, 1e-3))
    n = draw(st.integers(1, 6))
    frac = np.array([[draw(_COORD) for _ in range(3)] for _ in range(n)])
    if n > 1 and draw(st.integers(0, 3)) == 0:  # overlapping atoms
        frac[1] = frac[0] + draw(st.floats(0, 1e-3))
    if draw(st.integers(0, 3)) == 0:  # a NaN or infinite coordinate
        frac[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    species = [draw(st.sampled_from(["Na", "Cl", "O", "Fe", "H", "U"])) for _ in range(n)]
    return matrix, species, frac


@settings(max_examples=FAST, **_SETTINGS)
@given(lattice_and_sites())
def test_fuzzed_pymatgen_structures(parts):
    from pymatgen.core import Lattice, Structure

    matrix, species, frac = parts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure(Lattice(matrix), species, frac)
    except Exception:  # pymatgen itself refuses to build it: nothing reaches crysk
        CASES["pymatgen Structure: not constructible"] += 1
        return
    check(structure, "pymatgen Structure")


@pytest.mark.slow
@settings(max_examples=SLOW, **{**_SETTINGS, "derandomize": False})
@given(lattice_and_sites())
def test_fuzzed_pymatgen_structures_long(parts):
    test_fuzzed_pymatgen_structures.hypothesis.inner_test(parts)


@settings(max_examples=FAST, **_SETTINGS)
@given(lattice_and_sites(), st.booleans())
def test_fuzzed_ase_atoms(parts, periodic):
    ase = pytest.importorskip("ase")
    matrix, species, frac = parts
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        atoms = ase.Atoms(species, scaled_positions=None, positions=frac @ matrix, cell=matrix, pbc=periodic)
    check(atoms, "ASE Atoms")


@settings(max_examples=FAST, **_SETTINGS)
@given(lattice_and_sites())
def test_fuzzed_structure_dicts(parts):
    matrix, species, frac = parts
    d = {
        "@module": "pymatgen.core.structure", "@class": "Structure",
        "lattice": {"matrix": matrix.tolist()},
        "sites": [{"species": [{"element": el, "occu": 1}], "abc": f.tolist(), "label": el}
                  for el, f in zip(species, frac)],
    }
    check(d, "Structure dict")


def test_nearly_flat_cell_is_refused_not_run_out_of_memory():
    # found by fuzzing: a sheared cell 1e-4 Å thick made the neighbour search allocate 20 GB
    from pymatgen.core import Lattice, Structure

    matrix = np.array([[5.0, 0, 0], [0, 5.0, 0], [2.0, 3.0, 1e-4]])
    with pytest.raises(CrystalInputError, match=f"{ID}.*nearly flat.*get_reduced_structure"):
        CrystalGraphFeaturizer().transform([Structure(Lattice(matrix), ["Na"], [[0, 0, 0]])], ids=[ID])


def test_huge_cell_is_refused_not_run_out_of_memory():
    # found by fuzzing: a 3 x 1e6 x 1e6 Å cell made the neighbour search ask for 375 GB
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice(np.diag([3.0, 1e6, 1e6])), ["Na", "Na"], [[0, 0, 0], [0.5, 0, 0]])
    with pytest.raises(CrystalInputError, match=f"{ID}.*cell is huge.*units"):
        CrystalGraphFeaturizer().transform([s], ids=[ID])


def teardown_module(module):
    print("\nfuzzed cases:", dict(sorted(CASES.items())))
