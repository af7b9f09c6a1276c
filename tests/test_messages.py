"""Messages say what went wrong and what to change (issue 19, item 6)."""

import warnings

import numpy as np
import pytest

from crysk import CGCNNRegressor, CrystalGraphFeaturizer, CrystalInputError, as_structure

FAST = dict(atom_fea_len=8, n_conv=3, h_fea_len=8, batch_size=50, max_epochs=1, random_state=0)


@pytest.fixture(scope="module")
def graphs_y(eform_structures):
    structures, y, ids = eform_structures
    return CrystalGraphFeaturizer().transform(structures[:40], ids=ids[:40]), y[:40]


@pytest.fixture(scope="module")
def fitted(graphs_y):
    g, y = graphs_y
    return CGCNNRegressor(**FAST).fit(g, y)


def test_predict_on_no_crystals_gives_empty_predictions(fitted):
    assert fitted.predict([]).shape == (0,)
    assert fitted.predict(CrystalGraphFeaturizer().transform([])).shape == (0,)


def test_string_targets_name_y_and_the_value(graphs_y):
    g, _ = graphs_y
    y = ["1.0"] * 39 + ["a"]
    with pytest.raises(ValueError, match=r"y must hold numbers.*y\[39\] is 'a'"):
        CGCNNRegressor(**FAST).fit(g, y)


def test_formula_is_not_taken_for_a_missing_file():
    with pytest.raises(CrystalInputError, match="'NaCl' looks like a chemical formula"):
        as_structure("NaCl")
    with pytest.raises(CrystalInputError, match="does not exist"):
        as_structure("missing.cif")


def test_folder_is_not_reported_as_missing(tmp_path):
    with pytest.raises(CrystalInputError, match="is a folder, not a structure file.*load_cgcnn_folder"):
        as_structure(tmp_path)


def test_freeze_beyond_the_model_is_refused(graphs_y):
    g, y = graphs_y
    with pytest.raises(ValueError, match=r"convs up to 9, but this model has 3 convs; use convs\[:3\]"):
        CGCNNRegressor(**FAST, freeze="convs[:9]").fit(g, y)
    with pytest.warns(UserWarning, match="stay random"):  # the whole stack is fine (no warm start: warned)
        CGCNNRegressor(**FAST, freeze="convs[:3]").fit(g, y)


def test_freeze_warning_points_at_the_callers_line(graphs_y):
    g, y = graphs_y
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CGCNNRegressor(**FAST, freeze="convs").fit(g, y)
    ours = [w for w in caught if "stay random" in str(w.message)]
    assert ours and ours[0].filename == __file__, ours[0].filename
