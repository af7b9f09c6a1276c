import numpy as np
from pymatgen.core import Element

from crysk.elements import (
    ATOMIC_PROPERTIES,
    N_ELEMENT_FEATURES,
    cgcnn_feature_table,
    element_table_id,
    feature_names,
)


def test_table_shape_and_binary():
    table = cgcnn_feature_table()
    assert table.shape == (101, N_ELEMENT_FEATURES)
    assert set(np.unique(table)) == {0.0, 1.0}
    assert not table[0].any()
    assert not table.flags.writeable


def test_property_slices_partition_the_vector():
    covered = np.zeros(N_ELEMENT_FEATURES, dtype=int)
    for prop in ATOMIC_PROPERTIES:
        assert len(prop.categories) == prop.n_categories
        covered[prop.slice] += 1
    assert (covered == 1).all()
    table = cgcnn_feature_table()[1:]
    for prop in ATOMIC_PROPERTIES:
        # one-hot: at most one category per element and property
        assert table[:, prop.slice].sum(axis=1).max() == 1
    assert len(feature_names()) == N_ELEMENT_FEATURES


def _category(z, name):
    prop = next(p for p in ATOMIC_PROPERTIES if p.name == name)
    row = cgcnn_feature_table()[z, prop.slice]
    return prop.categories[int(np.argmax(row))]


def test_category_meanings_match_pymatgen():
    for sym in ["H", "O", "Na", "Fe", "Cu", "Br", "Pb"]:
        el = Element(sym)
        assert _category(el.Z, "group") == f"group {el.group}"
        assert _category(el.Z, "period") == f"period {el.row}"
        assert _category(el.Z, "block") == el.block
    assert _category(Element("La").Z, "group") == "lanthanide/actinide"
    # electronegativity bins of width 0.35 from 0.5: O (3.44) is in the 9th
    assert _category(8, "electronegativity").startswith("3.3")


def test_table_id():
    assert element_table_id().startswith("cgcnn92:")
