"""Training's ground floor on real labels and features: purged splits never leak a label, models are reproducible
and refuse a feature schema they were not fitted on."""
import numpy as np
import pandas as pd
import pytest
from futbot.config import UsageError
from futbot.features import synth_bars, build_features
from futbot.intervals import HOUR_MS, index_ms
from futbot.labels import make_labels
from futbot.train import time_split, walk_forward, uniqueness, make_model, Model, MODELS

SMALL_GRID = {"data.timeframes": ["5m", "15m"], "data.base_timeframe": "5m"}  # 12 days fill these windows

@pytest.fixture(scope="module")
def table():
    bars = {"1m": synth_bars(60 * 24 * 12, seed=4, vol=0.0012)}
    lab = make_labels(bars, horizon="4h", base="5m")
    X = build_features(bars, config=SMALL_GRID)             # rows from the first complete one
    lab = lab.reindex(X.index)
    assert X.notna().mean().mean() > 0.9, "the fixture's feature table must be real, not empty"
    return X, lab

@pytest.mark.parametrize("mode,folds", [("expanding", 3), ("expanding", 5), ("rolling", 4)])
def test_no_fitted_label_reaches_the_rows_it_is_judged_on(table, mode, folds):
    _, lab = table
    t, t_end, ok = index_ms(lab.index), index_ms(lab["t_end"]), lab["label"].notna().to_numpy()
    tr, va, te = time_split(lab.index, lab["t_end"], (0.7, 0.15, 0.15), "4h", ok)
    for fit, judged in ((tr, va), (np.r_[tr, va], te)):
        assert len(fit) and len(judged) and ok[fit].all() and ok[judged].all()
        assert t_end[fit].max() < t[judged].min()                         # purged
        assert t[judged].min() - t[fit].max() >= 4 * HOUR_MS             # embargoed
    folds = walk_forward(t[tr], t_end[tr], folds, mode, 2, "4h", ok[tr])   # positions within the training rows
    assert len(folds) >= 3
    for f in folds:
        fit, judged = tr[f.train], tr[f.valid]
        assert ok[fit].all() and ok[judged].all()
        assert t_end[fit].max() < t[judged].min()
        assert fit.max() < judged.min()
    assert te.max() == np.flatnonzero(ok).max()                           # the test period runs to the last label

def test_uniqueness_weights_fall_with_overlap(table):
    _, lab = table
    t, t_end = index_ms(lab.index)[:500], index_ms(lab["t_end"])[:500]
    w = uniqueness(t, t_end, 5 * 60_000)
    assert ((w > 0) & (w <= 1)).all()
    short = t_end - t < HOUR_MS                                           # labels that ended early overlap less
    assert w[short].mean() > w[~short].mean()

@pytest.mark.parametrize("kind", list(MODELS))
def test_models_reproduce_save_and_check_their_schema(table, kind, tmp_path):
    X, lab = table
    ok = lab["label"].notna().to_numpy()
    X, y = X[ok], lab["label"][ok].to_numpy()
    n = len(X)
    fit = lambda seed: make_model(kind, {"n_estimators": 40}, seed).fit(X[: n // 2], y[: n // 2], X_val=X[n // 2: 3 * n // 4],
                                                                         y_val=y[n // 2: 3 * n // 4])
    a, b = fit(42), fit(42)
    p = a.predict_proba(X[3 * n // 4:])
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(p, b.predict_proba(X[3 * n // 4:]))
    back = Model.load(a.save(tmp_path / kind))
    np.testing.assert_array_equal(back.predict_proba(X[3 * n // 4:]), p)
    assert back.features == list(X.columns)
    with pytest.raises(UsageError, match="missing"):
        back.predict_proba(X.drop(columns=X.columns[5]))
    with pytest.raises(UsageError, match="other order"):
        back.predict_proba(X[list(X.columns[1:]) + [X.columns[0]]])

def test_the_leak_check_catches_a_naive_split(table):
    "Without purging, the last training labels reach into validation: the check above would fail"
    _, lab = table
    t, t_end = index_ms(lab.index), index_ms(lab["t_end"])
    ok = lab["label"].notna().to_numpy()
    cut = int(len(t) * 0.7)
    cut += int(np.argmax(ok[cut - 1:]))                                   # cut right after a labelled row
    fit = np.flatnonzero(ok[:cut])
    assert t_end[fit].max() >= t[cut]                                     # a fitted label ends inside the judged rows

def test_out_of_fold_predictions_never_see_their_future(table):
    "Flip every label from fold k's first validated row on: the out-of-fold predictions of folds 1..k do not move"
    from futbot.train import oof_predict, choose_calibrator
    X, lab = table
    ok = lab["label"].notna().to_numpy()
    X, lab = X[ok], lab[ok]
    t, t_end, y = index_ms(lab.index), index_ms(lab["t_end"]), lab["label"].to_numpy()
    folds = walk_forward(t, t_end, 4, "expanding", 2, "4h")
    a = oof_predict("lgbm", X, y, folds, params={"n_estimators": 30})
    k = 2
    cut = folds[k - 1].valid[0]
    y2 = y.copy()
    y2[cut:] = 1 - y2[cut:]
    b = oof_predict("lgbm", X, y2, folds, params={"n_estimators": 30})
    upto = np.concatenate([f.valid for f in folds[:k]])
    np.testing.assert_array_equal(a[upto], b[upto])
    later = folds[k].valid
    assert not np.array_equal(a[later], b[later])                       # the flip did reach the later folds
    cal, scores = choose_calibrator(a, y)
    assert cal.method in scores and 0 <= cal(a[np.isfinite(a)]).min() <= cal(a[np.isfinite(a)]).max() <= 1
