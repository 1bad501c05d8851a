"""Sequence models (LSTM, 1D-CNN, Transformer) behind the one Model interface: they learn a label that lives in the
past, reproduce bit for bit, survive save and load, refuse a wrong schema, never read a later row, and fit their
scaler on the training rows only."""
import numpy as np
import pandas as pd
import pytest
torch = pytest.importorskip("torch")
from sklearn.metrics import roc_auc_score
from futbot import train
from futbot.config import UsageError
from futbot.deep import DEEP_MODELS, LSTMModel, attributions
from futbot.features import synth_bars, build_features
from futbot.labels import make_labels

KINDS = list(DEEP_MODELS)
TOY = dict(epochs=12, batch=128, patience=4)      # small tables need more, smaller steps than the defaults
REAL = dict(epochs=2)

SMALL_GRID = {"data.timeframes": ["5m", "15m"], "data.base_timeframe": "5m"}  # 12 days fill these windows

@pytest.fixture(scope="module")
def real():
    "Features and long labels of 12 days of synthetic 5m decisions (NaN labels at the end stay as context)"
    bars = {"1m": synth_bars(60 * 24 * 12, seed=4, vol=0.0012)}
    lab = make_labels(bars, horizon="4h", base="5m")
    X = build_features(bars, config=SMALL_GRID)             # rows from the first complete one
    lab = lab.reindex(X.index)
    assert X.notna().mean().mean() > 0.9, "the fixture's feature table must be real, not empty"
    assert np.isfinite(X.to_numpy()).mean() > 0.5, "the feature table is mostly empty"
    return X, lab["label"].to_numpy()

def toy_table(n=4000, noise=6, seed=0):
    "The label is a function of two features 3 and 7 rows back; the rest is noise"
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, noise + 2)), columns=["lag_a", "lag_b"] + [f"noise_{i}" for i in range(noise)])
    s = X["lag_a"].shift(3).fillna(0) + 0.5 * X["lag_b"].shift(7).fillna(0)
    return X, (s + 0.5 * rng.normal(size=n) > 0).astype(float).to_numpy()

@pytest.fixture(scope="module")
def toy():
    X, y = toy_table()
    c1, c2 = int(len(X) * 0.70), int(len(X) * 0.85)
    fits = {k: DEEP_MODELS[k](TOY).fit(X[:c1], y[:c1], X_val=X[c1:c2], y_val=y[c1:c2]) for k in KINDS}
    return X, y, c2, fits

@pytest.mark.parametrize("kind", KINDS)
def test_learns_a_label_that_lives_in_the_past(toy, kind):
    X, y, c2, fits = toy
    assert roc_auc_score(y[c2:], fits[kind].predict_proba(X[c2:])) > 0.65

@pytest.mark.parametrize("kind", KINDS)
def test_attributions_name_the_feature_that_drives_the_label(toy, kind):
    X, y, c2, fits = toy
    att = attributions(fits[kind], X[c2:])
    assert att.shape == (len(X) - c2, X.shape[1]) and np.isfinite(att).all()
    assert X.columns[np.abs(att).mean(0).argmax()] == "lag_a"

@pytest.mark.parametrize("kind", KINDS)
def test_real_table_reproduces_saves_and_checks_its_schema(real, kind, tmp_path, monkeypatch):
    X, y = real
    n = len(X)
    c1, c2 = n // 2, 3 * n // 4
    fit = lambda: DEEP_MODELS[kind](REAL, 42).fit(X[:c1], y[:c1], X_val=X[c1:c2], y_val=y[c1:c2])
    a = fit()
    p = a.predict_proba(X[c2:])
    assert p.dtype == np.float64 and ((p > 0) & (p < 1)).all()
    np.testing.assert_array_equal(fit().predict_proba(X[c2:]), p)                  # same seed, same rows: same bits
    back = train.Model.load(a.save(tmp_path / kind))
    assert type(back) is type(a) and back.features == list(X.columns)
    np.testing.assert_array_equal(back.predict_proba(X[c2:]), p)
    with pytest.raises(UsageError, match="other order"):
        back.predict_proba(X[list(X.columns[1:]) + [X.columns[0]]])
    with pytest.raises(UsageError, match="missing"):
        back.predict_proba(X.drop(columns=X.columns[7]))

@pytest.mark.parametrize("kind", KINDS)
def test_time_rule_later_rows_never_move_earlier_predictions(toy, kind):
    X, y, c2, fits = toy
    k = c2 + 200
    bent = X.copy()
    bent.iloc[k + 1:] = bent.iloc[k + 1:] * 3 + 1                                   # every row after row k
    before, after = fits[kind].predict_proba(X[c2:]), fits[kind].predict_proba(bent[c2:])
    np.testing.assert_array_equal(before[: k - c2 + 1], after[: k - c2 + 1])
    assert (before[k - c2 + 1:] != after[k - c2 + 1:]).all()                        # the check can fail

def test_scaler_is_fitted_on_training_rows_only():
    X, y = toy_table(2000, seed=2)
    X.iloc[::7, 3] = np.nan
    fit = lambda X_val: LSTMModel(dict(epochs=1)).fit(X[:1000], y[:1000], X_val=X_val, y_val=y[1000:])
    a, b = fit(X[1000:]), fit(X[1000:] * 10 + 5)
    assert a.scaler == b.scaler
    np.testing.assert_allclose(a.scaler["median"], X[:1000].median())
    np.testing.assert_allclose(a.scaler["iqr"], X[:1000].quantile(0.75) - X[:1000].quantile(0.25))

def test_sample_weights_are_honoured():
    "Rows whose labels are flipped but weighted 0 do not hurt; weighted 1 they do"
    X, y = toy_table(3000, seed=1)
    bad = np.arange(len(y)) % 2 == 0
    flipped = np.where(bad[:2000], 1 - y[:2000], y[:2000])
    w = np.where(bad[:2000], 0.0, 1.0)
    auc = lambda weight: roc_auc_score(y[2000:], LSTMModel(TOY).fit(X[:2000], flipped, weight).predict_proba(X[2000:]))
    assert auc(w) > 0.7 > 0.6 > auc(None)
