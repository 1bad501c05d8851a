"""Test-period evaluation (issue 12): metrics against scikit-learn, calibration error, direction AUC, SHAP additivity
and top contributions, the oracle's edge share, gates, the composite score and the challenger rule."""
import math, sys, types
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from futbot.config import load_config
from futbot.train import make_model
from futbot.evaluate import (classification_metrics, regression_metrics, direction_auc, reliability_figure, shap_values,
                             shap_sample, shap_summary, top_contributions, edge_share, gate_results, gate_line,
                             composite_score, rank, beats, SCORE_WEIGHTS, GATES)

@pytest.fixture(scope="module")
def cfg(): return load_config(env={})

@pytest.fixture(scope="module")
def toy():
    "Five features; the label follows `a` only"
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(2000, 5)), columns=list("abcde"))
    y = (X.a + 0.3 * rng.normal(size=len(X)) > 0).astype(int)
    return X, y

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    p, y = rng.uniform(size=800), rng.integers(0, 2, 800)
    m = classification_metrics(p, y, threshold=0.55)
    hit = p >= 0.55
    assert m["precision"] == pytest.approx(skm.precision_score(y, hit))
    assert m["recall"] == pytest.approx(skm.recall_score(y, hit))
    assert m["f1"] == pytest.approx(skm.f1_score(y, hit))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert (m["n"], m["predicted"], m["base_rate"]) == (800, int(hit.sum()), pytest.approx(y.mean()))

def test_ece_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=len(p)) < p).astype(int)
    assert classification_metrics(p, y)["ece"] < 0.02
    assert classification_metrics(np.clip(p + 0.3, 0, 1), y)["ece"] > 0.2
    assert classification_metrics(np.full(len(p), 0.5), y)["ece"] == pytest.approx(0.0, abs=0.02)

def test_degenerate_inputs_give_nan_not_errors():
    m = classification_metrics([0.1, 0.2, 0.3], [1, 1, 1], threshold=0.9)
    assert m["predicted"] == 0 and m["recall"] == 0.0
    assert all(math.isnan(m[k]) for k in ("precision", "f1", "roc_auc", "pr_auc"))
    m = classification_metrics([np.nan, 0.4], [1, np.nan])
    assert m["n"] == 0 and math.isnan(m["ece"]) and math.isnan(m["log_loss"])
    assert math.isnan(regression_metrics([], [])["mse"])

def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    y = rng.normal(size=300)
    pred = 0.7 * y + rng.normal(scale=0.3, size=300)
    m = regression_metrics(pred, y)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))
    assert m["explained_variance"] == pytest.approx(skm.explained_variance_score(y, pred))

def test_direction_auc():
    rng = np.random.default_rng(5)
    ret = rng.normal(size=5000)
    assert direction_auc(rng.uniform(size=5000), rng.uniform(size=5000), ret) == pytest.approx(0.5, abs=0.03)
    assert direction_auc(ret, np.zeros_like(ret), ret) == 1.0
    ret[:2500] = 0.0                                      # zero returns are dropped, not counted as down
    assert direction_auc(ret, np.zeros_like(ret), ret) == 1.0

def test_reliability_figure_is_small():
    import io
    rng = np.random.default_rng(6)
    fig = reliability_figure(rng.uniform(size=500), rng.integers(0, 2, 500))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert fig.dpi == 60 and len(buf.getvalue()) < 40_000

def test_lgbm_shap_adds_up_to_the_raw_margin(toy):
    import shap
    X, y = toy
    m = make_model("lgbm", dict(n_estimators=60)).fit(X[:1500], y[:1500], X_val=X[1500:1800], y_val=y[1500:1800])
    v = shap_values(m, X[1800:])
    raw = m.est.predict(X[1800:], raw_score=True, num_iteration=m.est.best_iteration)
    assert v.shape == (200, 5)
    assert np.allclose(v.sum(axis=1) + shap.TreeExplainer(m.est).expected_value, raw, atol=1e-6)
    top = top_contributions(v, X[1800:], k=2)
    assert len(top) == 200 and all(len(r) == 2 for r in top)
    assert np.mean([r[0]["name"] == "a" for r in top]) > 0.9
    assert set(top[0][0]) == {"name", "value", "contribution"} and top[0][0]["value"] == X.a.iloc[1800]
    assert shap_summary(v, X[1800:], k=3).feature.tolist()[0] == "a"

@pytest.mark.parametrize("kind", ["xgb", "rf"])
def test_other_tree_kinds_explain_their_output(toy, kind):
    import shap
    X, y = toy
    m = make_model(kind, dict(n_estimators=30)).fit(X[:1500], y[:1500])
    v, Xs = shap_sample(m, X[1500:], n=100, seed=7)
    assert v.shape == (100, 5) and list(Xs.index) == sorted(Xs.index)
    assert shap_summary(v, Xs).feature[0] == "a"
    if kind == "rf":                                     # class-1 probability
        base = shap.TreeExplainer(m.est).expected_value[1]
        assert np.allclose(v.sum(axis=1) + base, m.predict_proba(Xs), atol=1e-6)

def test_sequence_kinds_use_deep_attributions(monkeypatch):
    fake = types.ModuleType("futbot.deep")
    fake.attributions = lambda model, X: np.ones(X.shape)
    monkeypatch.setitem(sys.modules, "futbot.deep", fake)
    model = types.SimpleNamespace(kind="lstm", check=lambda X: None)
    X = pd.DataFrame(np.zeros((3, 2)), columns=["x", "y"])
    assert shap_values(model, X).tolist() == [[1.0, 1.0]] * 3
    v, Xs = shap_sample(model, pd.DataFrame(np.zeros((50, 2)), columns=["x", "y"]), n=10)   # one block: windows
    assert v.shape == (10, 2) and np.diff(Xs.index.to_numpy()).tolist() == [1] * 9

def test_top_contributions_shape_and_nan():
    X = pd.DataFrame(dict(x=[np.nan, 1.0], y=[2.0, 3.0], z=[0.0, 0.0]))
    v = np.array([[0.1, -0.3, 0.0], [0.5, 0.2, -0.6]])
    out = top_contributions(v, X, k=2)
    assert out[0] == [dict(name="y", value=2.0, contribution=-0.3), dict(name="x", value=None, contribution=0.1)]
    assert [c["name"] for c in out[1]] == ["z", "x"]
    with pytest.raises(ValueError): top_contributions(v[:1], X)

def test_edge_share():
    assert edge_share(0.66, 0.70) == pytest.approx(0.8)
    assert edge_share(1.0, 2.0, floor=0) == pytest.approx(0.5)
    for model, oracle in ((0.6, None), (0.6, 0.5), (0.6, 0.4), (0.6, float("nan")), (None, 0.7), (np.nan, 0.7)):
        assert edge_share(model, oracle) is None, (model, oracle)
    assert edge_share(-1.0, 0.0, floor=0) is None

GOOD = dict(precision=0.65, ece=0.03, backtest=dict(sharpe=1.8, max_drawdown=0.1, dsr=0.97, trades=80))

def test_gates_pass_fail_and_margins(cfg):
    res = gate_results(GOOD, cfg)
    assert [r["gate"] for r in res] == [g for g, _, _ in GATES]
    assert all(r["passed"] for r in res) and gate_line(res).startswith("passed every gate")
    bad = dict(precision=0.58, ece=float("nan"), sharpe=1.0, max_drawdown=0.3, trades=10)   # flat, no dsr
    res = {r["gate"]: r for r in gate_results(bad, cfg)}
    assert not any(r["passed"] for r in res.values())
    assert res["precision"]["margin"] == pytest.approx(-0.02) and res["max_drawdown"]["margin"] == pytest.approx(-0.1)
    assert res["trades"]["margin"] == -20 and res["ece"]["margin"] is None and res["dsr"]["value"] is None
    line = gate_line(list(res.values()))
    assert "\n" not in line and line.startswith("failed ")
    assert "precision 0.58 needs >= 0.6, off by 0.02" in line and "max_drawdown 0.3 needs <= 0.2, off by 0.1" in line
    assert "dsr missing (needs >= 0.95)" in line and "trades 10 needs >= 30, off by 20" in line

def test_gate_thresholds_come_from_the_config():
    cfg = load_config(env={}, overrides={"selection.min_trades": 100, "selection.min_dsr": 0.5})
    res = {r["gate"]: r for r in gate_results(GOOD, cfg)}
    assert not res["trades"]["passed"] and res["trades"]["threshold"] == 100
    assert res["dsr"]["margin"] == pytest.approx(0.47)

def test_composite_score_and_rank(cfg):
    assert sum(SCORE_WEIGHTS.values()) == pytest.approx(1.0)
    better = dict(GOOD, backtest=dict(GOOD["backtest"], dsr=0.99))
    assert composite_score(better) > composite_score(GOOD) > composite_score(dict(GOOD, precision=0.3))
    failing = dict(GOOD, backtest=dict(GOOD["backtest"], sharpe=9.0, trades=3))   # high score, fails a gate
    order = rank(dict(a=GOOD, b=failing, c=better), cfg)
    assert [r["name"] for r in order] == ["c", "a", "b"]
    assert order[-1]["failed"] == ["trades"] and not order[-1]["passed"]

def test_beats_needs_the_margin():
    assert beats(0.80, 0.75, margin=0.05) and not beats(0.79, 0.75, margin=0.05)
    assert beats(GOOD, None) and not beats(GOOD, GOOD, margin=0.01) and beats(GOOD, GOOD, margin=0.0)
    worse = dict(GOOD, backtest=dict(GOOD["backtest"], dsr=0.5))
    assert beats(GOOD, worse, margin=0.05) and not beats(worse, GOOD, margin=0.0)
    s = composite_score(GOOD)
    assert beats(GOOD, s - 0.06) and not beats(GOOD, s - 0.04)   # the configured margin, 0.05
