"""load_experimental_formation_enthalpy: pymatgen's measured enthalpies joined with MP structures."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition

from crysk.datasets import experimental as datasets
from crysk.datasets import Dataset, load_experimental_formation_enthalpy, load_table

# 1 eV per particle = 96.485 kJ/mol (CODATA); NIST-JANAF standard enthalpies of formation at 298 K
KJ_PER_MOL_PER_EV = 96.485
NACL_KJ_PER_MOL = -411.12  # NaCl(cr), 2 atoms per formula unit
MGO_KJ_PER_MOL = -601.24  # MgO(cr, periclase)


@pytest.fixture(scope="module")
def exp_table():
    return datasets._read_exp_compounds()


def test_the_packaged_file_has_every_measurement(exp_table):
    assert len(exp_table) == 2135
    assert exp_table["mpid"].notna().sum() == 1580 and exp_table["mpid"].dropna().is_unique


def test_energies_are_converted_from_per_formula_unit_to_per_atom(exp_table):
    by_formula = exp_table.set_index("formula")
    for formula, kj, atoms in (("NaCl", NACL_KJ_PER_MOL, 2), ("MgO", MGO_KJ_PER_MOL, 2)):
        row = by_formula.loc[formula]
        # by hand: kJ/mol of formula units -> eV per formula unit -> eV/atom; negative means stable
        assert row["formation_enthalpy_per_atom"] == pytest.approx(kj / KJ_PER_MOL_PER_EV / atoms, abs=0.003)
        assert row["n_atoms"] == atoms
    al2o3 = by_formula.loc["Al2O3"]
    assert al2o3["formation_enthalpy_per_atom"] == pytest.approx(al2o3["formation_enthalpy_per_fu"] / 5)


@pytest.fixture(scope="module")
def mp_table(data_path, tmp_path_factory):
    """A small structure table: 40 MP records that have a measurement, 10 that do not."""
    wanted = set(datasets._read_exp_compounds()["mpid"].dropna())
    hits, others = [], []
    with gzip.open(data_path / "mp_eform.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            (hits if rec["id"] in wanted else others).append(rec)
            if len(hits) >= 40 and len(others) >= 10:
                break
    path = tmp_path_factory.mktemp("mp") / "small.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in hits[:40] + others[:10]))
    return path, hits[:40]


def test_join_with_a_structure_table_counts_what_has_no_structure(mp_table):
    path, hits = mp_table
    mp = load_table(path, target_cols="formation_energy_per_atom")
    with pytest.warns(UserWarning, match="40 of 2135 .* left out 2095 without one"):
        exp = load_experimental_formation_enthalpy(mp)
    assert isinstance(exp, Dataset) and len(exp) == 40
    assert set(exp.ids) == {r["id"] for r in hits}
    assert len(exp.skipped) == 2095
    reasons = pd.Series([e.reason.split(": ", 1)[1] for e in exp.skipped]).value_counts()
    assert reasons["the file names no Materials Project id"] == 555
    assert reasons["no structure supplied for this id"] == 1540
    # the DFT value of the structure table comes along, aligned by id
    dft = {r["id"]: r["formation_energy_per_atom"] for r in hits}
    np.testing.assert_array_equal(exp.metadata["formation_energy_per_atom"], [dft[i] for i in exp.ids])
    for mpid in exp.ids:
        formula = Composition(exp.metadata.loc[mpid, "formula"]).reduced_formula
        assert exp.X.loc[mpid].composition.reduced_formula == formula
    per_fu = exp.metadata["formation_enthalpy_per_fu"] / exp.metadata["n_atoms"]
    np.testing.assert_allclose(exp.y, per_fu)


def test_a_dict_of_cif_text_joins_and_a_wrong_structure_is_left_out(mp_table):
    _, hits = mp_table
    cifs = {r["id"]: r["cif"] for r in hits[:5]}
    cifs[hits[0]["id"]] = hits[1]["cif"]  # the id now points to another compound's structure
    with pytest.warns(UserWarning, match="1 whose structure has another formula"):
        exp = load_experimental_formation_enthalpy(cifs)
    assert sorted(exp.ids) == sorted(r["id"] for r in hits[1:5])
    assert any(e.id == hits[0]["id"] and "structure supplied for this id is" in e.reason for e in exp.skipped)


def test_a_missing_file_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setattr(
        datasets, "_EXP_COMPOUNDS_LOCATIONS",
        (("pymatgen.analysis.compatibility", "no_such_file.json.gz"), ("no_such_package_xyz", "exp.json.gz")),
    )
    with pytest.raises(FileNotFoundError, match=r"does not ship exp_compounds.json.gz .*pip install -U pymatgen.*path="):
        load_experimental_formation_enthalpy({})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_experimental_formation_enthalpy({}, path=tmp_path / "nope.json.gz")


def test_structures_of_the_wrong_kind_are_refused():
    with pytest.raises(TypeError, match="dict {mp_id: structure}"):
        load_experimental_formation_enthalpy(["mp-1"])
