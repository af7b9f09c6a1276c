"""Sphinx configuration for the crysk documentation (``sphinx-build docs docs/_build``)."""

project = "crysk"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc"]
autosummary_generate = True
numpydoc_show_class_members = False
html_theme = "alabaster"
