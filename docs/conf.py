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


def _pretrained_models_page(app):
    """Write ``generated/pretrained_models.inc`` from the model cards, so the docs page cannot drift from them."""
    from pathlib import Path

    from crysk import pretrained

    def fmt(value):
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, list):
            return "; ".join(str(v) for v in value)
        return str(value)

    lines = []
    for name in pretrained.available(include_planned=True):
        card = pretrained.describe(name)
        title = f"``{name}``"
        lines += [title, "-" * len(title), "", card.get("summary", ""), ""]
        if card["status"] == "available":
            rows = [("status", "shipped"), ("data", card.get("data")), ("split", card.get("split")),
                    ("training crystals", card.get("n_train_crystals")), ("epochs", card.get("epochs")),
                    ("best epoch", card.get("best_epoch")), ("validation MAE", card.get("validation_mae")),
                    ("validation loss", card.get("validation_loss")),
                    ("test MAE", card.get("test_mae")), ("unit", card.get("unit")),
                    ("architecture", card.get("architecture")), ("featurizer", card.get("featurizer")),
                    ("training", card.get("training")), ("crysk version", card.get("crysk_version")),
                    ("wall time (s)", card.get("wall_time_s")), ("wall time note", card.get("wall_time_note")),
                    ("commands", card.get("training_commands")),
                    ("sha256", card.get("sha256")), ("licence", card.get("licence")),
                    ("attribution", card.get("attribution", []) + card.get("attribution_extra", []))]
        else:
            rows = [("status", "planned: not shipped in this version (training not finished)"),
                    ("data", card.get("data")), ("split", card.get("split_plan")),
                    ("architecture", card.get("architecture")), ("featurizer", card.get("featurizer")),
                    ("training", card.get("training")), ("use for", card.get("use_for")),
                    ("regenerate", card.get("regenerate")), ("licence", card.get("licence")),
                    ("attribution", card.get("attribution", []) + card.get("attribution_extra", []))]
        lines += [".. list-table::", "   :widths: 20 80", ""]
        for key, value in rows:
            if value is None and key in ("validation MAE", "validation loss", "test MAE", "wall time note"):
                continue  # e.g. an autoencoder has a validation loss and no MAE
            text = fmt(value)
            if key in ("regenerate", "commands", "sha256"):  # literal: commands keep their double dashes
                text = "; ".join(f"``{part}``" for part in text.split("; "))
            lines += [f"   * - {key}", f"     - {text}"]
        lines.append("")
    out = Path(app.srcdir) / "generated" / "pretrained_models.inc"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


def setup(app):
    app.connect("autodoc-skip-member", _defined_outside_crysk)
    app.connect("builder-inited", _pretrained_models_page)
html_theme = "alabaster"
