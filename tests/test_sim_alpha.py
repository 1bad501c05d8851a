"""The market model's promise: `alpha="none"` leaves nothing to learn about direction; the default alpha
plants structure whose oracle AUC for the default labels (4h, +2%/-1%) lies in [0.70, 0.82], long and short.
Runs the real 7-month generator; other seeds can be checked with FUTBOT_TEST_SEED."""
import os
import numpy as np
import pytest
from futbot.intervals import MINUTE_MS, HOUR_MS, to_seconds, bar_opens
from futbot.sim import Market, INTEREST

SEED = int(os.environ.get("FUTBOT_TEST_SEED", "7"))


def direction_features(m:Market, symbol:str, t:np.ndarray # decision times (ms), bar closes
                      )->np.ndarray: # [n, 9] features, each from data closed at t
    "Lagged returns (5m..4h, and the 4h before), taker-flow imbalance (1h, 4h), last funding and its running estimate"
    k = m.klines(symbol, "1m", m.start_ms, None, 10**7)     # every 1m bar from the history start
    i = (np.asarray(t, np.int64) - m.start_ms) // MINUTE_MS  # bars < i are closed at t
    lc = np.log(k["close"].astype(float))
    cv, cb = np.concatenate([[0], np.cumsum(k["volume"])]), np.concatenate([[0], np.cumsum(k["taker_buy"])])
    r = lambda a, b: lc[i - 1 - a] - lc[i - 1 - b]
    ofi = lambda h: 2 * (cb[i] - cb[i - h]) / np.maximum(cv[i] - cv[i - h], 1) - 1
    f = m.funding(symbol, start_ms=0, end_ms=int(np.max(t)), limit=10**6)
    j = np.searchsorted(f["fundingTime"], t, "right") - 1
    last_f = np.where(j >= 0, f["fundingRate"][np.maximum(j, 0)], INTEREST)
    return np.column_stack([r(0, 5), r(0, 15), r(0, 60), r(0, 240), r(240, 480), ofi(60), ofi(240),
                            last_f, m.funding_estimate(symbol, t)])


def direction_auc(m:Market, symbol:str, horizon="4h", step="5m", folds:int=5)->float:
    "Mean per-fold AUC of a logistic regression predicting the sign of the forward return (purged blocked CV)"
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline
    from sklearn.metrics import roc_auc_score
    H = int(to_seconds(horizon)) * 1000
    t = bar_opens(m.start_ms + 8 * HOUR_MS + MINUTE_MS, m.now_ms() - H, step)   # 8 h of history before the first
    i = (t - m.start_ms) // MINUTE_MS
    X = direction_features(m, symbol, t)
    lc = np.log(m.klines(symbol, "1m", m.start_ms, None, 10**7)["close"].astype(float))
    y = (lc[i - 1 + H // MINUTE_MS] > lc[i - 1]).astype(int)
    aucs = []
    edges = t[np.linspace(0, len(t) - 1, folds + 1).astype(int)]
    edges[-1] = t[-1] + 1
    for a, b in zip(edges[:-1], edges[1:]):
        te = (t >= a) & (t < b)
        tr = (t + H <= a - H) | (t >= b + H)          # purge: no training label overlaps the fold, plus an H embargo
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X[tr], y[tr])
        aucs.append(roc_auc_score(y[te], clf.predict_proba(X[te])[:, 1]))
    return float(np.mean(aucs))     # per fold: pooling folds would rank by each fold's intercept, biasing a null AUC below 0.5


@pytest.fixture(scope="module")
def markets():
    return Market(seed=SEED, alpha="none").generate(), Market(seed=SEED).generate()

def test_alpha_none_leaves_direction_unpredictable(markets):
    """Logistic regression on lagged returns, order-flow imbalance and funding, scored out of fold (purged
    blocked CV) over 7 months. 7 months hold ~1,300 independent 4h outcomes, so one symbol's AUC has a
    sampling sd of ~0.015 (measured over seeds 1-8): the two symbols' mean must lie within 0.50 +/- 0.02
    and each symbol within +/- 0.03 (2 sd)."""
    aucs = {s: direction_auc(markets[0], s) for s in ("BTCUSDT", "ETHUSDT")}
    assert abs(sum(aucs.values()) / 2 - 0.5) <= 0.02, aucs
    assert all(abs(a - 0.5) <= 0.03 for a in aucs.values()), aucs

# Oracle AUC band. Before the trend episodes (ALPHA_DEFAULT without `episode`): [0.60, 0.70], measured
# 0.679 BTCUSDT / 0.622 ETHUSDT on seed 7 (0.649-0.688 / 0.620-0.642 on seeds 1-3), and the oracle never
# reached P >= 0.8. With them (episode=0.14, episode_taker=0.10): 0.775 / 0.735 on seed 7 (0.764-0.772 /
# 0.730-0.743 on seeds 1-3), short side alike (0.72-0.79); see "The planted alpha, measured" in nbs/02_sim.ipynb.
AUC_BAND = (0.70, 0.82)

@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_default_alpha_oracle_ceiling(markets, symbol):
    none, default = (m.oracle_report(symbol) for m in markets)
    assert AUC_BAND[0] <= default["auc"] <= AUC_BAND[1], default
    assert default["auc"] > none["auc"] + 0.02, (default, none)   # the planted alpha adds to what volatility alone tells
    assert default["n"] > 10_000 and 0 < default["base_rate"] < 0.5

@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
def test_short_oracle_mirrors_the_long(markets, symbol):
    "The short oracle on the short labels: the same AUC band as the long one, and calibrated on both alphas"
    for m, band in zip(markets, ((0.55, 0.70), AUC_BAND)):
        short, long_ = m.oracle_report(symbol, side="short"), m.oracle_report(symbol)
        assert band[0] <= short["auc"] <= band[1] and abs(short["auc"] - long_["auc"]) < 0.08, (short, long_)
        assert short["ece"] <= 0.05 and long_["ece"] <= 0.05, (short, long_)
