"""The drift reference `futbot train` stores with each model, and drift figures on real feature rows of the local
exchange: a model's own symbol in a window of its training period against another symbol's rows, and the time rule."""
import json
import numpy as np
import pandas as pd
from futbot.barriers import SIDES
from futbot.dataset import load_dataset
from futbot.drift import load_reference, drift_at, window_rows, REF_QUANTILES
from futbot.intervals import index_ms, to_ms, DAY_MS
from futbot.live import LiveModel

def proba(model:LiveModel, X:pd.DataFrame)->pd.DataFrame:
    "Calibrated p_long, p_short of every row (a tree model: no context)"
    return pd.DataFrame({f"p_{s}": model.cals[s](model.models[s].predict_proba(X[model.features])) for s in SIDES},
                        index=X.index)

def test_reference_is_the_training_rows_and_drift_tells_symbols_apart(trained_market):
    "Every trained folder has a reference of its features and predictions; another symbol's rows drift, its own far less"
    d, url, models = trained_market
    refs = {s: load_reference(f) for s, f in models.items()}
    for s, f in models.items():
        schema = json.loads((f / "schema.json").read_text())
        assert list(refs[s]["features"]) == schema["features"] and set(refs[s]["predictions"]) == {"p_long", "p_short"}
        assert all(len(r["q"]) == REF_QUANTILES + 1 for r in refs[s]["features"].values() if r)
        assert refs[s]["rows"] > 1000
    s, other = sorted(models)
    m = LiveModel.load(models[s])
    X, _, _ = load_dataset(s, d / "data")
    Xo, _, _ = load_dataset(other, d / "data")
    test_start = to_ms(json.loads((models[s] / "metadata.json").read_text())["test_period"][0])
    first = int(index_ms(X.index)[0])
    t = first + int(0.6 * (test_start - first))           # a week inside the training period (70% of the rows)
    assert t - 7 * DAY_MS > first, (first, t)
    own = drift_at(refs[s], X, proba(m, X), t, "7d")
    alien = drift_at(refs[s], Xo, proba(m, Xo), t, "7d")
    assert own.rows == alien.rows > 1500
    assert alien.features.psi.median() > 2 * own.features.psi.median(), (own.summary(), alien.summary())
    assert (alien.features.level == "act").sum() > (own.features.level == "act").sum()
    # the time rule on real rows: everything after t replaced, the figures at t unchanged
    later = X.copy()
    later.iloc[np.flatnonzero(index_ms(X.index) > t)] = 1e6
    again = drift_at(refs[s], later, proba(m, X), t, "7d")
    pd.testing.assert_frame_equal(own.features, again.features)
    w = window_rows(later, t, "7d")
    assert len(w) == own.rows and not (w == 1e6).any().any()
