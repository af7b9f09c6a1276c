"""The ``crysk`` command: ``demo``, ``featurize``, ``train``, ``predict`` and ``pretrained``.

Built for batch jobs: every failure ends with one ``crysk: error: ...`` line
on stderr that says what to change, and a non-zero exit status (1 for bad
input or data, 2 for bad arguments, 130 when interrupted); ``--debug``
shows the traceback instead. Long work reports progress on stderr: a
progress bar on a terminal, plain lines in a log file. The heavy libraries
(torch, skorch, pymatgen) are imported only when a command needs them, so
``crysk --help`` answers at once.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

# structures featurized per progress report (large enough to keep worker processes busy)
_CHUNK = 512
_STRUCTURE_SUFFIXES = (".cif", ".cif.gz", ".vasp", ".poscar")


class CLIError(Exception):
    """An error to report as one ``crysk: error: ...`` line (exit status 1)."""


# ----------------------------------------------------------------------------- progress
class Progress:
    """Progress on stderr: a tqdm bar on a terminal, plain lines otherwise.

    Plain lines (for log files of batch jobs) are written at most every 10 %
    of the work or every 30 s, whichever comes first, and never hold ANSI
    codes or carriage returns.

    Parameters
    ----------
    total : int
        Units of work.
    desc : str
        What is being done (e.g. ``"featurizing"``).
    unit : str, default="it"
        Name of one unit.
    stream : file object, optional
        Where to write (default ``sys.stderr``).
    """

    def __init__(self, total: int, desc: str, unit: str = "it", stream=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.t0 = self._last_time = time.perf_counter()
        self._last_done = 0
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream, leave=True)

    def update(self, n: int = 1, **info: Any) -> None:
        """Count ``n`` more units done.

        Parameters
        ----------
        n : int, default=1
            Units finished since the last call.
        **info
            Values to show with the progress (e.g. a loss).
        """
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix(info, refresh=False)
            return
        now = time.perf_counter()
        step = max(1, self.total // 10)
        if self.done >= self.total or self.done - self._last_done >= step or now - self._last_time >= 30:
            extra = "".join(f", {k} {v}" for k, v in info.items())
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}{extra} ({now - self.t0:.1f} s)",
                  file=self.stream, flush=True)
            self._last_done, self._last_time = self.done, now

    def close(self) -> None:
        """End the bar (plain output needs no ending)."""
        if self._bar is not None:
            self._bar.close()


def _epoch_progress(total: int):
    """A skorch callback reporting each epoch through :class:`Progress` (the CLI trains with verbose=0)."""
    from skorch.callbacks import Callback

    class EpochProgress(Callback):
        def on_train_begin(self, net, **kwargs):
            self.progress_ = Progress(total, "training", unit="epochs")

        def on_epoch_end(self, net, **kwargs):
            row = net.history[-1]
            info = {"train_loss": f"{row['train_loss']:.4f}"}
            for key in ("valid_mae", "valid_loss"):
                if key in row:
                    info[key] = f"{row[key]:.4f}"
                    break
            self.progress_.update(1, **info)

        def on_train_end(self, net, **kwargs):
            self.progress_.close()

    return EpochProgress()


# ----------------------------------------------------------------------------- inputs
def _structure_inputs(paths: Sequence[str], folder: str | None) -> list[str]:
    """Structure files from the command line and ``--folder``, checked to exist."""
    files = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            raise CLIError(f"{p!r} is a folder: pass the CIF files in it, or use --folder {p}")
        if not path.exists():
            raise CLIError(f"structure file {p!r} does not exist")
        files.append(p)
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise CLIError(f"--folder {folder!r} is not a folder")
        found = sorted(str(f) for f in root.iterdir() if f.name.lower().endswith(_STRUCTURE_SUFFIXES))
        if not found:
            raise CLIError(f"--folder {folder!r} holds no structure files ({', '.join(_STRUCTURE_SUFFIXES)})")
        files.extend(found)
    if not files:
        raise CLIError("no structures given: pass CIF/POSCAR files, --folder DIR or --table FILE")
    return files


def _featurize(items: Sequence, ids: Sequence, featurizer_kwargs: dict, skip_bad: bool):
    """Featurize in chunks with progress; return the graphs and the skipped errors."""
    import warnings

    from .featurizer import CrystalGraphFeaturizer
    from .graphs import concatenate
    from .structures import CrystalInputError

    featurizer = CrystalGraphFeaturizer(errors="skip" if skip_bad else "raise", **featurizer_kwargs)
    parts, skipped = [], []
    progress = Progress(len(items), "featurizing", unit="structures")
    try:
        for start in range(0, len(items), _CHUNK):
            with warnings.catch_warnings():
                # the skipped structures are listed at the end, one per line
                warnings.simplefilter("ignore")
                try:
                    graphs, left_out = featurizer.transform_with_skipped(
                        list(items[start:start + _CHUNK]), ids=list(ids[start:start + _CHUNK]))
                except CrystalInputError as exc:
                    raise CLIError(f"{str(exc).rstrip('.')}. Use --skip-bad to leave out structures that cannot be used") from exc
            parts.append(graphs)
            skipped.extend(left_out)
            progress.update(min(_CHUNK, len(items) - start))
    finally:
        progress.close()
    if skipped:
        print(f"crysk: skipped {len(skipped)} of {len(items)} structures that could not be used:", file=sys.stderr)
        for exc in skipped:
            print(f"  {exc}", file=sys.stderr)
    parts = [p for p in parts if len(p)]
    if not parts:
        raise CLIError("no structure could be used")
    return concatenate(parts) if len(parts) > 1 else parts[0], skipped


def _load_dataset(args: argparse.Namespace):
    """A :class:`~crysk.datasets.Dataset` from a table file or a CGCNN folder (``train``)."""
    import warnings

    from .datasets import load_cgcnn_folder, load_table

    source = Path(args.data)
    if not source.exists():
        raise CLIError(f"{args.data!r} does not exist: pass a table (.csv, .jsonl, .json, optionally .gz) "
                       "or a CGCNN folder (id_prop.csv and CIF files)")
    errors = "skip" if args.skip_bad else "raise"
    tty = sys.stderr.isatty()
    if not tty:
        print(f"reading {args.data} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped records are listed below
        if source.is_dir():
            data = load_cgcnn_folder(source, n_jobs=args.n_jobs, errors=errors, verbose=tty, nrows=args.nrows)
        else:
            targets = None if args.target is None else [args.target]
            data = load_table(source, structure_col=args.structure_col, target_cols=targets, id_col=args.id_col,
                              n_jobs=args.n_jobs, errors=errors, verbose=tty, nrows=args.nrows)
    print(f"read {len(data)} structures in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if data.skipped:
        print(f"crysk: skipped {len(data.skipped)} records that could not be used:", file=sys.stderr)
        for exc in data.skipped:
            print(f"  {exc}", file=sys.stderr)
    return data


# ----------------------------------------------------------------------------- commands
def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from .estimators import CGCNNRegressor, load
    from .featurizer import CrystalGraphFeaturizer
    from .demo import make_demo_data

    print("pass criterion: the test MAE is below half the mean predictor's, and the saved model "
          "reloads to identical predictions")
    t0 = time.perf_counter()
    structures, y = make_demo_data(n=args.n, random_state=0)
    graphs = CrystalGraphFeaturizer().fit_transform(structures)
    n_test = args.n // 4
    train, test = slice(n_test, None), slice(0, n_test)
    print(f"made {args.n} crystals (rock salt and CsCl types); target: volume per atom (Å^3)")
    print(f"featurized in {time.perf_counter() - t0:.1f} s: {graphs}")

    model = CGCNNRegressor(
        atom_fea_len=32, h_fea_len=32, batch_size=32, max_epochs=args.epochs, lr_milestones=(max(1, int(0.8 * args.epochs)),),
        random_state=0, verbose=0, callbacks=[("progress", _epoch_progress(args.epochs))] if args.progress or args.verbose else None,
    )
    t = time.perf_counter()
    model.fit(graphs[train], y[train])
    mae = float(np.abs(model.predict(graphs[test]) - y[test]).mean())
    mad = float(np.abs(y[test] - y[train].mean()).mean())
    print(f"CGCNN: test MAE {mae:.3f} Å^3 (mean predictor {mad:.3f}) after {args.epochs} epochs "
          f"in {time.perf_counter() - t:.1f} s (best epoch {model.best_epoch_})")
    path = model.save_pretrained(args.output)
    again = load(path)
    same = np.array_equal(again.predict(graphs[test]), model.predict(graphs[test]))
    print(f"saved to {path}; reloaded model predicts {'identically' if same else 'DIFFERENTLY'}")
    tuned = CGCNNRegressor(
        atom_fea_len=32, h_fea_len=32, batch_size=32, max_epochs=max(1, args.epochs // 3), lr=0.005,
        warm_start_from=path, freeze="convs[:1]", random_state=0,
    ).fit(graphs[train][:50], y[train][:50])
    mae_tl = float(np.abs(tuned.predict(graphs[test]) - y[test]).mean())
    print(f"fine-tuned copy on 50 crystals (first conv frozen): test MAE {mae_tl:.3f} Å^3; "
          f"{len(tuned.transfer_report_.loaded)} tensors transferred")
    print(f"total {time.perf_counter() - t0:.1f} s")
    failures = []
    if not mae < 0.5 * mad:
        failures.append(f"test MAE {mae:.3f} is not below half the mean predictor's ({0.5 * mad:.3f}); "
                        "try more --epochs")
    if not same:
        failures.append("the reloaded model predicts differently")
    if failures:
        print("result: FAIL: " + "; ".join(failures))
        return 1
    print(f"result: PASS (test MAE {mae:.3f} < {0.5 * mad:.3f}; reloaded model identical)")
    return 0


def _featurize_cmd(args: argparse.Namespace) -> int:
    if args.table is not None:
        import warnings

        from .datasets import load_table

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_table(args.table, structure_col=args.structure_col, target_cols=[], id_col=args.id_col,
                              n_jobs=args.n_jobs, errors="skip" if args.skip_bad else "raise",
                              verbose=sys.stderr.isatty(), nrows=args.nrows)
        items, ids = list(data.structures), [str(i) for i in data.ids]
        for exc in data.skipped:
            print(f"crysk: skipped {exc}", file=sys.stderr)
    else:
        items = _structure_inputs(args.structures, args.folder)[: args.nrows]
        ids = list(items)
    graphs, _ = _featurize(items, ids, _featurizer_kwargs(args), args.skip_bad)
    path = graphs.save(args.output)
    print(f"saved {len(graphs)} crystal graphs to {path}")
    return 0


def _featurizer_kwargs(args: argparse.Namespace) -> dict:
    return {"radius": args.radius, "max_num_nbr": args.max_num_nbr, "n_jobs": args.n_jobs}


_MODELS = {"cgcnn": "CGCNNRegressor", "crysxpp": "CrysXPPRegressor"}


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from .estimators import CGCNNRegressor, CrysXPPRegressor, SaveBestCheckpoint

    output = Path(args.output)
    partial = output.with_name(output.stem + ".partial" + output.suffix)
    if args.resume and not partial.is_file():
        raise CLIError(f"--resume: no interrupted run to continue ({partial} does not exist)")
    data = _load_dataset(args)
    if data.targets.shape[1] == 0:
        raise CLIError(f"{args.data!r} has no numeric target column; name one with --target")
    if data.targets.shape[1] > 1 and args.target is None and not Path(args.data).is_dir():
        raise CLIError(f"{args.data!r} has several numeric columns {list(data.targets.columns)}; "
                       "choose the target with --target")
    complete = data.dropna()
    if len(complete) < len(data):
        print(f"crysk: left out {len(data) - len(complete)} records without a target value", file=sys.stderr)
    cls = {"CGCNNRegressor": CGCNNRegressor, "CrysXPPRegressor": CrysXPPRegressor}[_MODELS[args.model]]
    params = {
        "radius": args.radius, "max_num_nbr": args.max_num_nbr, "n_jobs": args.n_jobs,
        "max_epochs": args.epochs, "random_state": args.random_state, "verbose": 0,
        "callbacks": [("save_best", SaveBestCheckpoint(partial)), ("progress", _epoch_progress(args.epochs))],
    }
    for name in ("lr", "batch_size", "atom_fea_len", "n_conv", "h_fea_len", "n_h", "optimizer", "loss",
                 "validation_fraction", "warm_start_from", "freeze", "lr_milestones"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if params.get("validation_fraction") == 0:
        params["validation_fraction"] = None
    if params.get("validation_fraction", 1) is None:
        params["callbacks"][0] = ("save_best", SaveBestCheckpoint(partial, monitor=None))
    model = cls(**params)
    graphs, skipped = _featurize(list(complete.structures), [str(i) for i in complete.ids],
                                 _featurizer_kwargs(args), args.skip_bad)
    keep = np.isin(np.asarray([str(i) for i in complete.ids], dtype=object), [e.id for e in skipped], invert=True)
    y = complete.y.to_numpy()[keep]
    t = time.perf_counter()
    model.fit(graphs, y, resume_from=partial if args.resume else None)
    done = model.history[-1]["epoch"] if len(model.history) else args.epochs
    if done < args.epochs:  # skorch ends fit quietly on Ctrl-C
        print(f"crysk: interrupted after epoch {done} of {args.epochs}; the best epoch so far is in {partial}: "
              "rerun with --resume to continue", file=sys.stderr)
        return 130
    model.save_pretrained(output)
    partial.unlink(missing_ok=True)
    best = model.best_epoch_
    print(f"trained a {type(model).__name__} on {len(y)} structures in {time.perf_counter() - t:.1f} s "
          f"(best epoch {best}); saved to {output}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .graphs import CrystalGraphs
    from .estimators import load

    model = load(args.model)
    is_classifier = hasattr(model, "classes_")
    if not is_classifier and not hasattr(model, "target_scaler_"):
        raise CLIError(f"{args.model!r} holds a {type(model).__name__}, which makes no predictions; "
                       "use it as warm_start_from= of a regressor")
    one = args.structures[0] if len(args.structures) == 1 else ""
    from .store import is_store

    if (one.endswith(".npz") or is_store(one)) and args.folder is None:
        graphs = CrystalGraphs.load(args.structures[0])[: args.nrows]
        names = [str(i) for i in graphs.ids] if graphs.ids is not None else [str(i) for i in range(len(graphs))]
    else:
        files = _structure_inputs(args.structures, args.folder)[: args.nrows]
        settings = {"radius": model.radius, "max_num_nbr": model.max_num_nbr, "n_jobs": args.n_jobs}
        graphs, _ = _featurize(files, files, settings, args.skip_bad)
        names = [str(i) for i in graphs.ids]
    if is_classifier:
        # the label and each class's probability, as CGCNN's predict.py reports them
        proba = np.asarray(model.predict_proba(graphs))
        labels = model.classes_[proba.argmax(axis=1)] if len(proba) else []
        columns = ["label", *(f"P({c})" for c in model.classes_)]
        rows = [[str(label), *(f"{p:.6g}" for p in row)] for label, row in zip(labels, proba)]
    else:
        pred = np.asarray(model.predict(graphs))
        pred2 = pred.reshape(len(pred), -1)
        columns = ["prediction"] if pred2.shape[1] == 1 else [f"prediction_{j}" for j in range(pred2.shape[1])]
        rows = [[repr(float(v)) for v in row] for row in pred2]
    if args.output is None:
        if is_classifier:
            print("structure", *columns, sep="\t")
        for name, row in zip(names, rows):
            print(name, *row, sep="\t")
    else:
        with open(args.output, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *columns])
            writer.writerows([name, *row] for name, row in zip(names, rows))
        print(f"wrote {len(names)} predictions to {args.output}", file=sys.stderr)
    return 0


def _pretrained_list(args: argparse.Namespace) -> int:
    from . import pretrained

    names = pretrained.available(include_planned=True)
    shipped = set(pretrained.available())
    if not shipped:
        print("no pretrained model is shipped with this installation yet", file=sys.stderr)
    for name in names:
        card = pretrained.describe(name)
        if name not in shipped and not args.all:
            continue
        status = "available" if name in shipped else "planned (not shipped yet)"
        print(f"{name}\t{status}\t{card.get('summary', '')}")
    if not args.all and set(names) - shipped:
        print(f"{len(set(names) - shipped)} more planned but not shipped yet: crysk pretrained list --all",
              file=sys.stderr)
    return 0


def _pretrained_info(args: argparse.Namespace) -> int:
    import json

    from . import pretrained

    card = pretrained.describe(args.name)
    if args.json:
        print(json.dumps(card, indent=1))
        return 0
    shown = {k: v for k, v in card.items() if k != "reference"}
    for key, value in shown.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        print(f"{key}: {value}")
    if "reference" in card:
        ref = card["reference"]
        print(f"reference: {len(ref['ids'])} structures ({', '.join(ref['ids'][:3])}, ...) with stored outputs")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_input_options(p: argparse.ArgumentParser, table: bool) -> None:
    p.add_argument("--folder", help="also read every structure file (.cif, .vasp, ...) in this folder")
    if table:
        p.add_argument("--table", help="read structures from a table (.csv/.jsonl/.json, optionally .gz) "
                                       "instead of files")
        p.add_argument("--structure-col", default="cif", help="column of --table holding the structures (default cif)")
        p.add_argument("--id-col", default="id", help="column of --table holding the ids (default id)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nrows", type=int, help="use only the first NROWS structures (reading stops there)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out structures that cannot be used (they are listed on stderr) instead of stopping")
    p.add_argument("--n-jobs", type=int, default=1, help="processes featurizing in parallel (default 1; -1: all cores)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crysk`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="crysk", description="Crystal graph neural networks for scikit-learn.")
    parser.add_argument("--version", action="version", version=f"crysk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train, save, reload and fine-tune a CGCNN on crystals crysk makes itself",
                          description="Train, save, reload and fine-tune a CGCNN on synthetic crystals. Passes "
                                      "(exit 0) when the test MAE is below half the mean predictor's and the "
                                      "reloaded model predicts identically; otherwise says why and exits 1.")
    demo.add_argument("--n", type=_positive_int, default=400, help="number of crystals (default 400)")
    demo.add_argument("--epochs", type=_positive_int, default=40, help="training epochs (default 40)")
    demo.add_argument("--output", default="crysk-demo.pt", help="where to save the model (default crysk-demo.pt)")
    demo.add_argument("--progress", action="store_true", help="report each training epoch on stderr")
    demo.add_argument("--verbose", type=int, default=0, help="1: the same as --progress (kept for older scripts)")
    demo.set_defaults(func=_demo)

    feat = sub.add_parser("featurize", help="turn structures into crystal graphs saved in a .npz file",
                          description="Featurize structures once (e.g. on a cluster) and save the graphs; "
                                      "crysk predict and Python code (CrystalGraphs.load) reuse them.")
    feat.add_argument("structures", nargs="*", help="CIF/POSCAR files")
    feat.add_argument("-o", "--output", required=True, help="graphs to write: a .npz file, or any other path for a "
                      "memory-mappable graph store directory")
    feat.add_argument("--radius", type=float, default=8.0, help="neighbour cut-off in Å (default 8)")
    feat.add_argument("--max-num-nbr", type=_positive_int, default=12, help="neighbours per atom (default 12)")
    _add_input_options(feat, table=True)
    feat.set_defaults(func=_featurize_cmd)

    train = sub.add_parser("train", help="train a model on a table or CGCNN folder and save a checkpoint",
                           description="Train on DATA (a .csv/.jsonl/.json table, optionally .gz, with a "
                                       "structure column; or a CGCNN folder with id_prop.csv) and save the best "
                                       "epoch as a checkpoint. The best epoch so far is kept in "
                                       "OUTPUT.partial while training; --resume continues an interrupted run.")
    train.add_argument("data", help="table file or CGCNN folder")
    train.add_argument("-o", "--output", required=True, help="checkpoint to write (e.g. model.pt)")
    train.add_argument("--target", help="target column of the table (default: its only numeric column)")
    train.add_argument("--structure-col", default="cif", help="column holding the structures (default cif)")
    train.add_argument("--id-col", default="id", help="column holding the ids (default id)")
    train.add_argument("--model", choices=sorted(_MODELS), default="cgcnn", help="which network (default cgcnn)")
    train.add_argument("--epochs", type=_positive_int, default=100, help="training epochs (default 100)")
    train.add_argument("--lr", type=float, help="learning rate (model default: 0.01)")
    train.add_argument("--lr-milestones", type=int, nargs="*", help="epochs at which lr is multiplied by 0.1")
    train.add_argument("--batch-size", type=_positive_int, help="crystals per batch (model default)")
    train.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimizer (default sgd)")
    train.add_argument("--loss", choices=["mse", "mae"], help="training loss (default mse)")
    train.add_argument("--atom-fea-len", type=_positive_int, help="atom embedding width (default 64)")
    train.add_argument("--n-conv", type=_positive_int, help="graph convolutions (default 3)")
    train.add_argument("--h-fea-len", type=_positive_int, help="hidden layer width (default 128)")
    train.add_argument("--n-h", type=_positive_int, help="hidden layers (default 1)")
    train.add_argument("--validation-fraction", type=float,
                       help="share held out to pick the best epoch (model default; 0: none, keep the last epoch)")
    train.add_argument("--warm-start-from", help="checkpoint to start from (crysk, CGCNN .pth.tar, CrysAE .pth) or a "
                                                 "pretrained model's name (crysk pretrained list)")
    train.add_argument("--freeze", help="layers kept fixed: embedding, convs, convs[:k], all-but-head")
    train.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.partial")
    train.add_argument("--radius", type=float, default=8.0, help="neighbour cut-off in Å (default 8)")
    train.add_argument("--max-num-nbr", type=_positive_int, default=12, help="neighbours per atom (default 12)")
    _add_common(train)
    train.set_defaults(func=_train)

    pred = sub.add_parser("predict", help="predict with a saved model (crysk or original CGCNN checkpoint; classifiers print each class probability)",
                          description="Predict with a checkpoint; prints id<TAB>prediction lines, or writes a CSV "
                                      "with -o.")
    pred.add_argument("model", help="checkpoint file (crysk, or an original CGCNN .pth.tar) or a pretrained model's name")
    pred.add_argument("structures", nargs="*", help="CIF/POSCAR files, or one .npz file or graph store from crysk featurize")
    pred.add_argument("-o", "--output", help="write the predictions to this CSV file (columns id, prediction)")
    _add_input_options(pred, table=False)
    pred.set_defaults(func=_predict)

    pre = sub.add_parser("pretrained", help="list the pretrained models that ship with crysk, or show a model card",
                         description="Pretrained models are used by name wherever a checkpoint path works "
                                     "(warm_start_from=, crysk.load, crysk predict NAME ...).")
    pre_sub = pre.add_subparsers(dest="pretrained_command", required=True, metavar="ACTION")
    pre_list = pre_sub.add_parser("list", help="names of the models this installation has")
    pre_list.add_argument("--all", action="store_true", help="also the planned models not shipped yet")
    pre_list.set_defaults(func=_pretrained_list)
    pre_info = pre_sub.add_parser("info", help="the model card of NAME")
    pre_info.add_argument("name", help="a name from `crysk pretrained list`")
    pre_info.add_argument("--json", action="store_true", help="the whole card as JSON (reference structures included)")
    pre_info.set_defaults(func=_pretrained_info)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crysk`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 1 for an error in the input or data,
        2 for bad arguments, 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "nrows", None) is not None and args.nrows < 1:
        parser.error("--nrows must be a positive integer")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("crysk: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (e.g. `crysk predict ... | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # one line for every failure; --debug shows where it came from
        if args.debug:
            raise
        from .structures import CrystalInputError

        known = (CLIError, CrystalInputError, ValueError, OSError)
        if not isinstance(exc, known) and type(exc).__name__ not in ("CheckpointError", "NonFiniteLossError"):
            print(f"crysk: error: unexpected {type(exc).__name__}: {_one_line(exc)} "
                  "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
        else:
            print(f"crysk: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
