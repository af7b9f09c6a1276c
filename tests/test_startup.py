"""Start-up: ``import crysk`` and ``crysk --help`` stay light (issue 19, item 2)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "skorch", "pymatgen", "sklearn", "pandas")


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    return set(out.stdout.split())


def test_import_crysk_loads_no_heavy_dependency():
    assert _loaded("import crysk") == set()


@pytest.mark.parametrize("module", ["crysk.featurizer", "crysk.structures", "crysk.datasets", "crysk.graphs"])
def test_featurizing_modules_never_import_torch(module):
    # featurization worker processes import these modules to run their tasks
    loaded = _loaded(f"import {module}")
    assert "torch" not in loaded and "skorch" not in loaded


def test_public_names_resolve_lazily():
    code = "import crysk\nassert crysk.CGCNNRegressor.__name__ == 'CGCNNRegressor'\nassert 'CGCNNRegressor' in dir(crysk)"
    assert {"torch", "skorch"} <= _loaded(code)
    assert "torch" in _loaded("import crysk\ncrysk.checkpoints.load_checkpoint")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import crysk

        crysk.nope  # noqa: B018


def test_help_does_not_import_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "crysk.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: crysk" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
