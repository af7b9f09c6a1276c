"""Sphinx configuration for the crysk documentation (``sphinx-build docs docs/_build``)."""

project = "crysk"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "numpydoc"]
autosummary_generate = True
numpydoc_show_class_members = False
templates_path = ["_templates"]


def _defined_outside_crysk(app, what, name, obj, skip, options):
    """Document crysk's own members only.

    The estimators subclass skorch's ``NeuralNet`` (and scikit-learn's mixins), which bring
    ~60 public methods of their own (``train_step_single``, ``on_batch_begin`` ...); those are
    documented by skorch and scikit-learn, and api.rst links there.
    """
    if what != "class":
        return None
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None)
    if module is not None and not module.startswith("crysk"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _defined_outside_crysk)
html_theme = "alabaster"
