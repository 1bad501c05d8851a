"""futbot.metrics against hand computations and independent formulas: returns, Sharpe, Sortino, drawdowns, VaR/ES,
alpha/beta, PSR/DSR (the paper's example and Monte Carlo), rolling Sharpe, trades, the summary."""
import json, math
import numpy as np, pandas as pd, pytest
from scipy import stats
from futbot.metrics import (returns_at, periods_in_year, total_return, cagr, sharpe, sortino, rolling_sharpe, drawdown,
                            max_drawdown, calmar, var_es, alpha_beta, sharpe_moments, sharpe_variance, prob_sharpe, psr,
                            expected_max_sharpe, dsr, trade_stats, summary_metrics, jsonable)

DAY = pd.Timedelta("1D")

def days(values, start="2024-01-01"):
    return pd.Series(np.asarray(values, float), index=pd.date_range(start, periods=len(values), freq="1D", tz="UTC"))

def test_returns_at_by_hand():
    "Last value of each day against the last of the day before; the first day against the first value"
    t = pd.to_datetime(["2024-01-01 03:00", "2024-01-01 20:00", "2024-01-02 01:00", "2024-01-02 23:59",
                        "2024-01-04 00:00"], utc=True)
    r = returns_at(pd.Series([200.0, 210, 190, 220, 231], index=t))
    assert list(r.index) == list(pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC"))
    np.testing.assert_allclose(r.to_numpy(), [210 / 200 - 1, 220 / 210 - 1, 0.0, 231 / 220 - 1])
    r8 = returns_at(pd.Series([200.0, 210, 190, 220, 231], index=t), "8h")   # 8h periods aligned at 00, 08, 16 UTC
    assert r8.index[1] - r8.index[0] == pd.Timedelta("8h") and len(r8) == 10   # Jan 1 00:00 ... Jan 4 00:00
    np.testing.assert_allclose((1 + r8).prod(), 231 / 200)
    assert periods_in_year("1h") == 8760 and periods_in_year("1d") == 365

def naive_sharpe(r, ppy):
    n = len(r)
    m = sum(r) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in r) / (n - 1))
    return m / sd * math.sqrt(ppy)

def naive_sortino(r, ppy):
    n = len(r)
    m = sum(r) / n
    return m / math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / n) * math.sqrt(ppy)

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharpe_sortino_against_plain_python(seed):
    r = list(np.random.default_rng(seed).normal(0.0005, 0.01, 300))
    assert math.isclose(sharpe(r), naive_sharpe(r, 365), rel_tol=1e-10)
    assert math.isclose(sharpe(r, 8760), naive_sharpe(r, 8760), rel_tol=1e-10)
    assert math.isclose(sortino(r), naive_sortino(r, 365), rel_tol=1e-10)
    assert math.isclose(sharpe(pd.Series(r + [np.nan])), naive_sharpe(r, 365), rel_tol=1e-10)   # NaN dropped

def test_zero_variance_and_short_input():
    assert sharpe(np.zeros(30)) == 0.0 and sortino(np.zeros(30)) == 0.0
    assert np.isnan(sharpe(np.full(30, 0.1))) and np.isnan(sortino(np.full(30, 0.1)))   # x / 0: undefined
    for r in ([], [0.01], [np.nan, 0.01]):
        assert np.isnan(sharpe(r)) and np.isnan(sortino(r)) and np.isnan(psr(r)) and np.isnan(dsr(r, 5))

def test_total_return_and_cagr():
    e = pd.Series([100.0, 80, 150], index=pd.to_datetime(["2023-01-01", "2023-06-01", "2024-01-01"], utc=True))
    assert math.isclose(total_return(e), 0.5)
    assert math.isclose(cagr(e), 0.5)                                       # exactly 365 days
    e2 = pd.Series([100.0, 121], index=pd.to_datetime(["2023-01-01", "2025-01-01"], utc=True))   # 731 days: a leap year
    assert math.isclose(cagr(e2), 1.21 ** (365 / 731) - 1)
    e2 = pd.Series([100.0, 121], index=pd.to_datetime(["2023-01-01", "2024-12-31"], utc=True))   # 730 days
    assert math.isclose(cagr(e2), 0.1)
    assert cagr(pd.Series([100.0, 0.0], index=e2.index)) == -1.0
    assert np.isnan(cagr(e.iloc[:1])) and np.isnan(total_return(e.iloc[:0]))

def test_max_drawdown_and_duration_by_hand():
    # peak 100 day 0, trough 70 day 2 (30%), back at 100 day 5; peak 120 day 7, 108 on day 8, never recovers (to day 14)
    e = days([100, 90, 70, 85, 95, 100, 110, 120, 108, 110, 115, 112, 118, 119, 119.5])
    mdd, dur, peak, trough = max_drawdown(e)
    assert math.isclose(mdd, 0.3) and peak == e.index[0] and trough == e.index[2]
    assert dur == 7 * DAY                                                  # the unrecovered one: day 7 -> day 14
    assert max_drawdown(e.iloc[:8])[1] == 5 * DAY                          # without it: day 0 -> day 5
    dd = drawdown(e)
    np.testing.assert_allclose(dd.to_numpy()[:4], [0, 0.1, 0.3, 0.15])
    assert (dd >= 0).all() and dd.iloc[7] == 0
    assert math.isclose(calmar(e), cagr(e) / 0.3)
    up = days([1, 2, 3])
    assert max_drawdown(up)[:2] == (0.0, pd.Timedelta(0)) and np.isnan(calmar(up))   # gain, no drawdown: x / 0
    assert pd.isna(max_drawdown(up)[2]) and np.isnan(max_drawdown(up.iloc[:0])[0])

def test_drawdown_against_a_loop():
    e = days(100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.02, 400))))
    peak, best, cur, longest, t0 = e.iloc[0], 0.0, None, pd.Timedelta(0), None
    for t, v in e.items():
        if v >= peak:
            if t0 is not None: longest = max(longest, t - t0)
            peak, t0 = v, None
            peak_t = t
        else:
            if t0 is None: t0 = peak_t
            best = max(best, 1 - v / peak)
    if t0 is not None: longest = max(longest, e.index[-1] - t0)
    mdd, dur, _, _ = max_drawdown(e)
    assert math.isclose(mdd, best, rel_tol=1e-12) and dur == longest and dur > 10 * DAY

def test_var_es_on_a_known_sample():
    r = -np.random.default_rng(0).permutation(np.arange(1, 201)) / 1000      # losses 0.1% ... 20%, shuffled
    assert np.allclose(var_es(r, 0.95), (0.191, np.mean(np.arange(191, 201)) / 1000))    # the 10 worst of 200
    assert np.allclose(var_es(r, 0.99), (0.199, 0.1995))
    worst5 = np.sort(-r[:100])[-5:]                                       # 100 x 0.05 is 5, not 6
    assert np.allclose(var_es(np.r_[r[:100], np.nan], 0.95), (worst5[0], worst5.mean()))
    g = np.random.default_rng(1).normal(0, 0.01, 200_000)                 # normal: VaR 1.645 sd, ES pdf(1.645)/0.05 sd
    v, es = var_es(g, 0.95)
    z = stats.norm.ppf(0.95)
    assert abs(v - 0.01 * z) < 2e-4 and abs(es - 0.01 * stats.norm.pdf(z) / 0.05) < 2e-4
    with pytest.raises(ValueError, match="level must lie strictly between 0 and 1"): var_es(r, 1.0)

def test_alpha_beta_on_synthetic_returns():
    rng = np.random.default_rng(7)
    idx = pd.date_range("2024-01-01", periods=20_000, freq="1D", tz="UTC")
    b = pd.Series(rng.normal(0.0002, 0.03, len(idx)), index=idx)
    r = 0.001 + 1.7 * b + rng.normal(0, 0.005, len(idx))
    a, beta = alpha_beta(r, b, 365)
    assert abs(beta - 1.7) < 0.005 and abs(a - 0.001 * 365) < 0.03
    X = np.column_stack([np.ones(len(b)), b.to_numpy()])
    coef = np.linalg.lstsq(X, r.to_numpy(), rcond=None)[0]
    assert np.allclose([a / 365, beta], coef, rtol=1e-10)
    a2, beta2 = alpha_beta(r.iloc[:5000], b.iloc[2000:], 365)              # aligned on the index: 3000 common rows
    assert np.allclose([a2 / 365, beta2], np.polyfit(b.iloc[2000:5000], r.iloc[2000:5000], 1)[::-1], rtol=1e-10)
    assert all(np.isnan(alpha_beta(r, pd.Series(0.0, index=idx))))

def test_rolling_sharpe_against_pandas():
    r = pd.Series(np.random.default_rng(3).normal(0.001, 0.02, 500))
    r.iloc[200:260] = 0.0                                                 # flat stretch: 0, never inf
    ref = r.rolling(30).apply(lambda w: naive_sharpe(list(w), 365) if np.ptp(w) else 0.0, raw=True)
    got = rolling_sharpe(r, 30, 365)
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-8, atol=1e-12)
    assert got.iloc[:29].isna().all() and (got.iloc[229:260] == 0).all()

def test_psr_and_dsr_reproduce_the_paper_example():
    "Bailey & Lopez de Prado (2014): N=100, V=1/2 annual, SR 2.5 annual over 1250 days, skew -3, kurtosis 10"
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert abs(sr0 - 0.1132) < 5e-5
    assert abs(prob_sharpe(2.5 / math.sqrt(250), 1250, -3.0, 10.0, sr0) - 0.9004) < 5e-5
    assert expected_max_sharpe(1, 1.0) == 0.0
    with pytest.raises(ValueError, match="n_trials must be at least 1"): expected_max_sharpe(0, 1.0)

def test_expected_max_sharpe_against_monte_carlo():
    "Max of N standard normals: the Euler-Mascheroni approximation is asymptotic in N, within 3% at 10, 1.5% from 100"
    rng = np.random.default_rng(11)
    for n, tol in ((10, 0.03), (100, 0.015), (1000, 0.015)):
        mc = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert abs(expected_max_sharpe(n, 4.0) / 2 - mc) / mc < tol

def test_psr_formula_and_moments():
    x = np.random.default_rng(4).standard_t(5, 800) * 0.01 + 0.0008
    sr, g3, g4, n = sharpe_moments(x)
    d = x - x.mean()
    assert math.isclose(sr, x.mean() / math.sqrt((d ** 2).sum() / (n - 1)), rel_tol=1e-12)
    assert math.isclose(g3, (d ** 3).mean() / (d ** 2).mean() ** 1.5, rel_tol=1e-10)
    assert math.isclose(g4, (d ** 4).mean() / (d ** 2).mean() ** 2, rel_tol=1e-10)
    v = (1 - g3 * sr + (g4 - 1) / 4 * sr ** 2) / (n - 1)
    assert math.isclose(sharpe_variance(sr, n, g3, g4), v, rel_tol=1e-12)
    assert math.isclose(psr(x), stats.norm.cdf(sr / math.sqrt(v)), rel_tol=1e-12)
    assert math.isclose(psr(x, 0.05), stats.norm.cdf((sr - 0.05) / math.sqrt(v)), rel_tol=1e-12)
    assert math.isclose(dsr(x), psr(x)) and dsr(x, 10) < psr(x)
    sr0 = expected_max_sharpe(25, v)
    assert math.isclose(dsr(x, 25), psr(x, sr0), rel_tol=1e-12)
    assert math.isclose(dsr(x, 25, sr_variance=4 * v), psr(x, 2 * sr0), rel_tol=1e-12)

def test_psr_is_uniform_without_skill():
    "iid normal returns with true Sharpe 0: PSR(0) is ~ uniform (mean 0.5, 5% of runs below 0.05)"
    rng = np.random.default_rng(8)
    p = np.array([psr(rng.normal(0, 0.01, 250)) for _ in range(1000)])
    assert abs(p.mean() - 0.5) < 0.03
    assert abs((p < 0.05).mean() - 0.05) < 0.025 and abs((p > 0.95).mean() - 0.05) < 0.025

def test_flat_equity():
    "Never trades: Sharpe, Sortino, Calmar 0; PSR 0.5 (no evidence); DSR over several trials below 0.5"
    r = np.zeros(100)
    assert sharpe_moments(r) == (0.0, 0.0, 3.0, 100)
    assert psr(r) == 0.5 and dsr(r, 1) == 0.5 and dsr(r, 20) < 0.5
    assert math.isclose(dsr(r, 20), stats.norm.cdf(-expected_max_sharpe(20, 1 / 99) * math.sqrt(99)))

def test_trade_stats_by_hand():
    s = trade_stats(np.array([100.0, -50, 25, -25, 0, 150]), np.array([2.0, -1, 0.5, -0.5, 0, 3]),
                    pd.Series(pd.to_timedelta(["1h", "3h", "2h", "30min", "6h", "1h30min"])))
    assert s["trades"] == 6 and math.isclose(s["win_rate"], 0.5) and math.isclose(s["loss_rate"], 1 / 3)
    assert math.isclose(s["avg_win"], 275 / 3) and math.isclose(s["avg_loss"], -37.5)
    assert math.isclose(s["profit_factor"], 275 / 75) and math.isclose(s["expectancy_r"], 4 / 6)
    assert math.isclose(s["avg_holding_h"], 14 / 6) and math.isclose(s["median_holding_h"], 1.75)
    assert trade_stats([10.0, 5], [1, 0.5], [60, 60])["profit_factor"] is None      # no losses: None, documented
    empty = trade_stats([], [], [])
    assert empty["trades"] == 0
    assert all(v is None for k, v in empty.items() if k not in ("trades", "gross_profit", "gross_loss"))
    json.dumps(empty)

def test_jsonable():
    d = jsonable({"a": np.float64(np.nan), "b": np.inf, "c": np.int64(3), "d": np.float32(0.5), "e": "x", "f": None})
    assert d == {"a": None, "b": None, "c": 3, "d": 0.5, "e": "x", "f": None} and type(d["c"]) is int

@pytest.fixture(scope="module")
def curve():
    t = pd.date_range("2024-01-01", periods=200 * 24, freq="1h", tz="UTC")
    rng = np.random.default_rng(9)
    close = pd.Series(50 * np.exp(np.cumsum(rng.normal(0, 0.004, len(t)))), index=t)
    eq = 1000 * (1 + 0.3 * close.pct_change().fillna(0) + rng.normal(0.00005, 0.001, len(t))).cumprod()
    return eq, close

KEYS = {"sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_duration_h", "total_return", "cagr", "var", "es",
        "alpha", "beta", "psr", "dsr", "periods_per_year", "n_periods", "skew", "kurtosis", "sharpe_per_period"}

def test_summary_equals_the_parts(curve):
    eq, close = curve
    s = summary_metrics(eq, close, n_trials=7, var_level=0.99)
    assert KEYS <= set(s) and json.loads(json.dumps(s)) == s
    r = returns_at(eq, "1d")
    mdd, dur, _, _ = max_drawdown(eq)
    assert s["n_periods"] == 200 and s["periods_per_year"] == 365
    for k, v in dict(sharpe=sharpe(r), sortino=sortino(r), calmar=calmar(eq), max_drawdown=mdd, cagr=cagr(eq),
                     max_drawdown_duration_h=dur / pd.Timedelta("1h"), total_return=total_return(eq),
                     var=var_es(r, 0.99)[0], es=var_es(r, 0.99)[1], psr=psr(r), dsr=dsr(r, 7),
                     alpha=alpha_beta(r, returns_at(close), 365)[0], beta=alpha_beta(r, returns_at(close), 365)[1],
                     sharpe_per_period=sharpe_moments(r)[0]).items():
        assert math.isclose(s[k], v, rel_tol=1e-12), k
    assert 0.2 < s["beta"] < 0.4
    h = summary_metrics(eq, freq="1h")
    assert h["periods_per_year"] == 8760 and h["n_periods"] == len(eq)
    assert math.isclose(h["sharpe"], sharpe(returns_at(eq, "1h"), 8760)) and h["alpha"] is None

@pytest.mark.parametrize("n", [0, 1, 2])
def test_summary_of_tiny_curves(curve, n):
    eq, close = curve
    s = summary_metrics(eq.iloc[:n], close.iloc[:n], n_trials=3)
    assert KEYS <= set(s) and json.loads(json.dumps(s)) == s
    assert s["sharpe"] is None and s["psr"] is None and s["dsr"] is None

def test_summary_of_flat_equity(curve):
    eq, _ = curve
    s = summary_metrics(pd.Series(500.0, index=eq.index), n_trials=5)
    flat = ("sharpe", "sortino", "calmar", "max_drawdown", "total_return", "psr")
    assert tuple(s[k] for k in flat) == (0, 0, 0, 0, 0, 0.5)
    assert s["dsr"] < 0.5 and s["max_drawdown_duration_h"] == 0
