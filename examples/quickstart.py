"""Quick start on data crysk makes itself: no downloads, no shared data.

Builds a few hundred strained rock-salt and CsCl-type crystals with pymatgen,
featurizes them into crystal graphs once, trains a small CGCNN on three
quarters of them, predicts the rest and saves the model. About half a minute
on 2 CPU cores.

    python examples/quickstart.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

import crysk
from crysk import CGCNNRegressor, CrystalGraphFeaturizer
from crysk.demo import make_demo_data


def main() -> None:
    structures, y = make_demo_data(n=300, random_state=0)
    t = time.perf_counter()
    graphs = CrystalGraphFeaturizer().fit_transform(structures)  # featurize once, reuse everywhere
    dt = time.perf_counter() - t
    print(f"featurized {len(graphs)} crystals in {dt:.2f} s, {graphs.nbytes / len(graphs):,.0f} bytes each")

    g_train, g_test, y_train, y_test = train_test_split(graphs, y, random_state=0)
    model = CGCNNRegressor(atom_fea_len=32, h_fea_len=32, batch_size=32, max_epochs=30, lr_milestones=(24,),
                           random_state=0)
    t = time.perf_counter()
    model.fit(g_train, y_train)
    pred = model.predict(g_test)
    mae = np.abs(pred - y_test).mean()
    baseline = np.abs(y_test - y_train.mean()).mean()
    print(f"trained {model.max_epochs} epochs in {time.perf_counter() - t:.1f} s (best epoch {model.best_epoch_})")
    print(f"test MAE {mae:.3f} Å^3 per atom (predicting the mean: {baseline:.3f}); R² {model.score(g_test, y_test):.3f}")
    for true, guess in list(zip(y_test, pred))[:3]:
        print(f"  volume per atom {true:6.2f} Å^3, predicted {guess:6.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save_pretrained(Path(tmp) / "quickstart.pt")
        again = crysk.load(path)  # weights-only checkpoint: hyperparameters, scaler, graph settings
        assert np.array_equal(again.predict(g_test), pred)
        print(f"saved and reloaded {path.name}: identical predictions")


if __name__ == "__main__":
    main()
