"""futbot.labels: equal to a brute-force reference (ties included) on 1m and on coarser path bars, time rule,
weights, report."""
import warnings
import numpy as np, pandas as pd, pytest, talib
import matplotlib; matplotlib.use("Agg")
from futbot.features import synth_bars, resample_bars, perturb_after, build_features
from futbot.intervals import BAR_COLS
from futbot.labels import (make_labels, first_touch_nb, first_touch_ref, uniqueness_weights, LabelReport,
                           CoarsePathWarning)

MIN = pd.Timedelta("1min")

def random_trades(m1, seed, share=0.5):
    "aggTrades for a random half of the minutes: a few prices wandering between the minute's low and high"
    rng = np.random.default_rng(seed); rows = []
    for o, h, l in zip(m1.index, m1.high.to_numpy(), m1.low.to_numpy()):
        if rng.random() > share: continue
        for k in range(6): rows.append((o + pd.Timedelta(seconds=5 + 9 * k), rng.uniform(l, h)))
    ts, px = zip(*rows)
    return pd.DataFrame({"price": px, "qty": 1.0}, index=pd.DatetimeIndex(ts))

def brute(m1, base_min, kind, h_min, up, down, trades=None, atr=None, atr_mult=None, path_min=1, side="long"):
    "Plain loops over the path bars (1m, or `path_min` minutes) after each decision time, as the issue states the rules"
    sgn = 1.0 if side == "long" else -1.0                  # a short profits from a fall
    P = path_min * MIN
    hi, lo, cl = (dict(zip(m1.index, m1[c])) for c in ("high", "low", "close"))
    last = m1.index[-1]
    tr = {} if trades is None else trades.groupby(trades.index.floor(P))["price"].apply(list).to_dict()
    labels, spans, excluded = {}, {}, 0
    first = m1.index[0]
    n_base = len(m1) * path_min // base_min
    for b in range(n_base):
        o = first + b * base_min * MIN; t = o + base_min * MIN
        entry = cl[t - P]
        d = down if atr_mult is None else atr_mult * atr[b] / entry
        u = up if atr_mult is None else d * up / down
        if t + h_min * MIN > last + P or not np.isfinite(d): labels[t] = np.nan; continue
        up_px, dn_px = entry * (1 + u), entry * (1 - d)
        if side == "short": up_px, dn_px = entry * (1 + d), entry * (1 - u)   # stop above, take-profit below
        res, exit_m = 0, t + h_min * MIN - P
        for k in range(h_min // path_min):
            m = t + k * P
            if m not in hi: continue
            hu, hd = hi[m] >= up_px, lo[m] <= dn_px
            if hu and hd:
                res = "tie"
                for p in tr.get(m, []):
                    if p >= up_px: res = 1; break
                    if p <= dn_px: res = -1; break
            elif hu: res = 1
            elif hd: res = -1
            if hu or hd: exit_m = m; break
        if side == "short" and res in (1, -1): res = -res    # upper barrier first: the short's stop
        spans[t] = (t, exit_m)
        if kind == "regression": labels[t] = min(max(sgn * (cl[t + h_min * MIN - P] / entry - 1), -d), u); continue
        if res == "tie": labels[t] = np.nan; excluded += 1
        elif kind == "binary": labels[t] = {1: 1.0, -1: 0.0, 0: np.nan}[res]
        else: labels[t] = float(res)
    # average uniqueness over the path bars
    conc = {}
    for a, e in spans.values():
        m = a
        while m <= e: conc[m] = conc.get(m, 0) + 1; m += P
    w = {}
    for t, (a, e) in spans.items():
        ms = pd.date_range(a, e, freq=P); w[t] = np.mean([1 / conc[m] for m in ms])
    return pd.Series(labels), pd.Series(w), excluded

@pytest.fixture(scope="module")
def m1():
    return synth_bars(60 * 24 * 2, seed=5, vol=0.002)

@pytest.mark.parametrize("kind", ["binary", "ternary", "regression"])
@pytest.mark.parametrize("base_min,with_trades", [(5, False), (5, True), (15, True), (1, False)])
def test_labels_equal_brute_force(m1, kind, base_min, with_trades):
    trades = random_trades(m1, seed=base_min) if with_trades else None
    L = make_labels({"1m": m1}, kind, "2h", up=0.004, down=0.002, trades=trades, base=f"{base_min}m")
    ref, w, excl = brute(m1, base_min, kind, 120, 0.004, 0.002, trades)
    ref = ref.reindex(L.index)
    np.testing.assert_array_equal(L["label"].to_numpy(), ref.to_numpy())
    np.testing.assert_allclose(L["weight"].dropna().to_numpy(), w.reindex(L["weight"].dropna().index).to_numpy(), rtol=1e-12)
    assert L.attrs["ties_excluded"] == excl
    if kind != "regression":
        assert L.attrs["ties"] > 0 and excl > 0                     # the data does exercise the tie rule
        if with_trades: assert L.attrs["ties"] > excl                # ... and trades resolve some ties

def test_atr_barriers_equal_brute_force(m1):
    L = make_labels({"1m": m1}, "ternary", "2h", up=0.02, down=0.01, atr_mult=1.5, base="5m")
    b5 = resample_bars(m1, "5m")
    a = talib.ATR(b5.high.to_numpy(), b5.low.to_numpy(), b5.close.to_numpy(), 14)
    ref, _, _ = brute(m1, 5, "ternary", 120, 0.02, 0.01, atr=a, atr_mult=1.5)
    ref = ref.reindex(L.index)
    np.testing.assert_array_equal(L["label"].to_numpy()[14:], ref.to_numpy()[14:])
    assert np.isnan(L["label"].iloc[:14]).all()                   # no ATR yet, no label
    np.testing.assert_allclose(L["down"].to_numpy()[14:], 1.5 * a[14:] / b5.close.to_numpy()[14:], rtol=1e-9)

def test_brute_force_check_can_fail(m1):
    "An optimistic tie rule (ties count as take-profit) is caught by the reference"
    L = make_labels({"1m": m1}, "binary", "2h", up=0.004, down=0.002, base="5m")
    ref, _, _ = brute(m1, 5, "binary", 120, 0.004, 0.002)
    optimistic = L["label"].where(~(L["label"].isna() & (L["t_end"] < L.index + pd.Timedelta("2h"))), 1.0)
    with pytest.raises(AssertionError): np.testing.assert_array_equal(optimistic.to_numpy(), ref.reindex(L.index).to_numpy())

def test_first_touch_kernel_against_reference():
    rng = np.random.default_rng(1); c = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, 3000)))
    hi, lo = c * (1 + np.abs(rng.normal(0, 0.003, 3000))), c * (1 - np.abs(rng.normal(0, 0.003, 3000)))
    j0 = np.arange(2500); j1 = j0 + rng.integers(1, 400, 2500)
    args = (hi, lo, j0, j1, c[j0] * 1.01, c[j0] * 0.995)
    for a, b in zip(first_touch_nb(*args), first_touch_ref(*args)): np.testing.assert_array_equal(a, b)

def test_weights_simple_cases():
    np.testing.assert_allclose(uniqueness_weights(np.array([0, 0]), np.array([3, 3]), 4), [0.5, 0.5])
    np.testing.assert_allclose(uniqueness_weights(np.array([0, 4]), np.array([3, 7]), 8), [1.0, 1.0])

def assert_label_time_rule(bars:dict, trades, horizon:str, up:float, down:float, base:str,
                           at:int, after:str, seed:int, min_done:int, side:str="long"):
    "Rows whose horizon ends <= T are bit-identical when every bar and trade after T is scrambled; later rows change"
    for kind in ("binary", "ternary", "regression"):
        L = make_labels(bars, kind, horizon, up, down, trades=trades, base=base, side=side)
        T = L.index[at] + pd.Timedelta(after)
        pb, pe = perturb_after(bars, T, seed=seed, extras={"trades": trades})
        Lp = make_labels(pb, kind, horizon, up, down, trades=pe["trades"], base=base, side=side)
        done = L.index + pd.Timedelta(horizon) <= T
        assert done.sum() > min_done and L[done].equals(Lp[done])
        assert not L[~done].equals(Lp[~done])

def test_label_time_rule(m1):
    assert_label_time_rule({"1m": m1}, random_trades(m1, seed=9), "2h", 0.004, 0.002, "5m",
                           at=300, after="3min", seed=3, min_done=200)

def test_config_defaults_and_errors(m1):
    L = make_labels({"1m": m1}, kind=None, horizon=None, up=None, down=None)      # configs/model.yaml: binary, 4h, 2%, 1%
    assert L.attrs["kind"] == "binary" and L.attrs["horizon"] == "4h"
    assert (L.index[1] - L.index[0]) == pd.Timedelta("5min")                          # data.base_timeframe
    with pytest.warns(CoarsePathWarning, match="no 1m bars, barriers are checked on 5m bars"):   # issue 9: not an error
        assert make_labels({"5m": resample_bars(m1, "5m")}, base="5m").attrs["path"] == "5m"
    with pytest.raises(ValueError, match="no bars at 5m or finer"):
        make_labels({"1h": resample_bars(m1, "1h")}, base="5m")
    with pytest.warns(CoarsePathWarning):                                   # no base given: the features' fallback
        L1h = make_labels({"1h": resample_bars(m1, "1h")}, horizon="4h")
    assert L1h.index[1] - L1h.index[0] == pd.Timedelta("1h") and L1h.attrs["path"] == "1h"
    with pytest.raises(ValueError, match="kind must be"): make_labels({"1m": m1}, kind="quaternary", base="5m")

def test_label_report(m1):
    L = make_labels({"1m": m1}, "ternary", "20m", 0.004, 0.002, base="5m")
    X = build_features({"1m": m1}, config={"data.timeframes": ["5m"], "data.base_timeframe": "5m"})
    r = LabelReport(L, X, top=10)
    assert list(r.balance.index) == [-1.0, 0.0, 1.0] and np.isclose(r.balance["share"].sum(), 1)
    assert r.monthly["rows"].sum() == L["label"].notna().sum()
    assert len(r.corr) == 10 and r.corr["spearman"].abs().is_monotonic_decreasing
    fig = r.figure(); assert len(fig.axes) == 3
    assert "ternary labels" in r._repr_html_()


# --- labels at any base timeframe (issue 9 point 7): the finest bars given are the path

@pytest.fixture(scope="module")
def m1_long():
    "20 days of 1m bars: enough hourly bars for hourly horizons, ties and ATR"
    return synth_bars(60 * 24 * 20, seed=11, vol=0.002)

def hourly_trades(h1, seed):
    "aggTrades inside a random half of the hours, a few prices between the hour's low and high"
    return random_trades(h1, seed)

@pytest.mark.parametrize("kind", ["binary", "ternary", "regression"])
@pytest.mark.parametrize("base,with_trades", [("1h", False), ("1h", True), ("4h", False)])
def test_hourly_only_labels_equal_brute_force(m1_long, kind, base, with_trades):
    "Bars with no 1m (hourly, from any source): the 1h bars are the path, equal to the plain loop over them"
    h1 = resample_bars(m1_long, "1h")
    bars = {"1h": h1} if base == "1h" else {"1h": h1, "4h": resample_bars(m1_long, "4h")}
    trades = hourly_trades(h1, seed=3) if with_trades else None
    with pytest.warns(CoarsePathWarning, match="checked on 1h bars"):
        L = make_labels(bars, kind, "12h", up=0.02, down=0.01, trades=trades, base=base)
    assert L.attrs["path"] == "1h"
    ref, w, excl = brute(h1, int(base[0]) * 60, kind, 12 * 60, 0.02, 0.01, trades, path_min=60)
    np.testing.assert_array_equal(L["label"].to_numpy(), ref.reindex(L.index).to_numpy())
    wl = L["weight"].dropna()
    np.testing.assert_allclose(wl.to_numpy(), w.reindex(wl.index).to_numpy(), rtol=1e-12)
    assert L.attrs["ties_excluded"] == excl
    if kind != "regression":
        assert L.attrs["ties"] > 0 and excl > 0                     # hourly bars do touch both barriers
        if with_trades: assert L.attrs["ties"] > excl                # ... and the trades inside the hour resolve some

def test_finest_bars_given_are_the_path(m1_long):
    "5m and 1h given, base 1h: the 5m bars decide, equal to the plain loop over 5m bars"
    b5, h1 = resample_bars(m1_long, "5m"), resample_bars(m1_long, "1h")
    with pytest.warns(CoarsePathWarning, match="checked on 5m bars"):
        L = make_labels({"5m": b5, "1h": h1}, "ternary", "6h", 0.01, 0.005, base="1h")
    ref, _, excl = brute(b5, 60, "ternary", 360, 0.01, 0.005, path_min=5)
    np.testing.assert_array_equal(L["label"].to_numpy(), ref.reindex(L.index).to_numpy())
    assert L.attrs["path"] == "5m" and L.attrs["ties_excluded"] == excl

def test_coarse_path_said_once_and_1m_says_nothing(m1_long):
    h1 = resample_bars(m1_long, "1h")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        make_labels({"1h": h1}, "binary", "12h", 0.02, 0.01, base="1h")
    assert [x.category for x in w] == [CoarsePathWarning]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_labels({"1m": m1_long, "1h": h1}, "binary", "12h", 0.02, 0.01, base="1h").attrs["path"] == "1m"

def test_hourly_path_never_contradicts_the_1m_path(m1_long):
    "Where an hour touches one barrier only, every minute in it does too: hourly decisions equal 1m ones"
    h1 = resample_bars(m1_long, "1h")
    with pytest.warns(CoarsePathWarning):
        Lh = make_labels({"1h": h1}, "ternary", "12h", 0.02, 0.01, base="1h")
    Lm = make_labels({"1m": m1_long, "1h": h1}, "ternary", "12h", 0.02, 0.01, base="1h")
    dec = Lh["label"].notna()
    assert dec.sum() > 300 and (Lh.loc[dec, "label"] == Lm.loc[dec, "label"]).all()
    assert Lh["label"].isna().sum() > Lm["label"].isna().sum()    # coarse bars leave more ties, all excluded

def test_hourly_labels_time_rule(m1_long):
    "Hourly path: rows whose horizon ends <= T are bit-identical when everything after T is scrambled"
    h1 = resample_bars(m1_long, "1h")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarsePathWarning)
        assert_label_time_rule({"1h": h1}, hourly_trades(h1, seed=5), "12h", 0.02, 0.01, "1h",
                               at=200, after="20min", seed=4, min_done=150)

def test_hourly_labels_look_only_after_t(m1_long):
    "The bar closing at t (and every earlier bar) never decides the label at t; the first bar after t does"
    h1 = resample_bars(m1_long, "1h")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoarsePathWarning)
        L = make_labels({"1h": h1}, "binary", "12h", 0.02, 0.01, base="1h")
        for k in (100, 250, 400):
            wild = h1.copy()
            wild.iloc[k, wild.columns.get_loc("high")] *= 1.5              # touches every take-profit near it
            wild.iloc[k, wild.columns.get_loc("low")] *= 0.5               # ... and every stop
            t = wild.index[k] + pd.Timedelta("1h")                        # that bar's close: a decision time
            Lw = make_labels({"1h": wild}, "binary", "12h", 0.02, 0.01, base="1h")
            cols = ["label", "ret", "t_end"]
            assert Lw.loc[t:, cols].equals(L.loc[t:, cols])               # rows at and after its close never see it
            assert np.isnan(Lw.loc[t - pd.Timedelta("1h"), "label"])      # the row before: a tie in its first bar


# --- 1m data with missing minutes, and the 4h horizon (issue 10, item 6)

def brute_gappy(m1, base, kind, h_min, up, down, trades=None):
    "Plain loops for 1m bars with holes: entry is the base bar's close; the path is the minutes present in [t, t + H)"
    hi, lo, cl = (dict(zip(m1.index, m1[c])) for c in ("high", "low", "close"))
    present, last = set(m1.index), m1.index[-1]
    tr = {} if trades is None else trades.groupby(trades.index.floor("1min"))["price"].apply(list).to_dict()
    labels, spans = {}, {}
    for o, entry in base["close"].items():
        t = o + (base.index[1] - base.index[0])
        path = [t + k * MIN for k in range(h_min) if t + k * MIN in present]
        if t + h_min * MIN > last + MIN or not path: labels[t] = np.nan; continue
        up_px, dn_px = entry * (1 + up), entry * (1 - down)
        res, exit_m = 0, path[-1]
        for m in path:
            hu, hd = hi[m] >= up_px, lo[m] <= dn_px
            if hu and hd:
                first = next((p for p in tr.get(m, []) if p >= up_px or p <= dn_px), None)
                res = "tie" if first is None else (1 if first >= up_px else -1)
            elif hu: res = 1
            elif hd: res = -1
            if hu or hd: exit_m = m; break
        spans[t] = [m for m in path if m <= exit_m]
        if kind == "regression": labels[t] = min(max(cl[path[-1]] / entry - 1, -down), up); continue
        if res == "tie": labels[t] = np.nan
        elif kind == "binary": labels[t] = {1: 1.0, -1: 0.0, 0: np.nan}[res]
        else: labels[t] = float(res)
    conc = {}
    for ms in spans.values():
        for m in ms: conc[m] = conc.get(m, 0) + 1
    w = {t: np.mean([1 / conc[m] for m in ms]) for t, ms in spans.items()}   # uniqueness over the bars present
    return pd.Series(labels), pd.Series(w)

@pytest.fixture(scope="module")
def m1_gappy():
    "6 days of 1m bars with 3% of the minutes missing, single ones and runs of up to 40"
    m = synth_bars(60 * 24 * 6, seed=21, vol=0.002)
    rng = np.random.default_rng(4)
    drop = set(rng.choice(len(m), int(0.02 * len(m)), replace=False))
    for s in rng.choice(len(m) - 40, 12, replace=False): drop |= set(range(s, s + int(rng.integers(5, 40))))
    return m.iloc[sorted(set(range(len(m))) - drop)]

@pytest.mark.parametrize("kind", ["binary", "ternary", "regression"])
@pytest.mark.parametrize("with_trades", [False, True])
def test_labels_with_missing_minutes_at_4h_equal_brute_force(m1_gappy, kind, with_trades):
    trades = random_trades(m1_gappy, seed=2) if with_trades else None
    base = resample_bars(m1_gappy, "5m")
    L = make_labels({"1m": m1_gappy, "5m": base}, kind, "4h", up=0.006, down=0.003, trades=trades, base="5m")
    ref, w = brute_gappy(m1_gappy, base, kind, 240, 0.006, 0.003, trades)
    np.testing.assert_array_equal(L["label"].to_numpy(), ref.reindex(L.index).to_numpy())
    wl = L["weight"].dropna()
    np.testing.assert_allclose(wl.to_numpy(), w.reindex(wl.index).to_numpy(), rtol=1e-9)   # sums in another order
    if kind != "regression": assert L.attrs["ties"] > 0
    assert L["label"].notna().sum() > 1000

def test_gappy_brute_force_can_fail(m1_gappy):
    "A path that reads the bar closing at t (one bar early) is caught by the reference"
    base = resample_bars(m1_gappy, "5m")
    ref, _ = brute_gappy(m1_gappy, base, "ternary", 240, 0.01, 0.005)
    shifted = {"1m": m1_gappy.set_axis(m1_gappy.index + MIN), "5m": base}      # every minute seen one minute early
    L = make_labels(shifted, "ternary", "4h", up=0.01, down=0.005, base="5m")
    with pytest.raises(AssertionError): np.testing.assert_array_equal(L["label"].to_numpy(), ref.reindex(L.index).to_numpy())


# --- short labels: the mirror of the long ones (issue 11)

def hand_bars(hlc:list)->pd.DataFrame:
    "1m bars from (high, low, close) triples, each opening at the previous close"
    hi, lo, cl = (np.array(x, dtype=float) for x in zip(*hlc))
    df = pd.DataFrame({"open": np.r_[cl[0], cl[:-1]], "high": hi, "low": lo, "close": cl},
                      index=pd.date_range("2024-01-01", periods=len(cl), freq="1min", tz="UTC", name="open_time"))
    for c in BAR_COLS[4:]: df[c] = 1 if c == "trades" else 1.0
    return df[list(BAR_COLS)]

# entry 100 at the close of bar 0; long: take-profit 102, stop 99; short: take-profit 98, stop 101
UP_FIRST = [(100, 100, 100), (100.5, 99.5, 100), (101.2, 100, 101), (102.5, 101, 102), (102, 101, 101.5)]
DOWN_FIRST = [(200 - l, 200 - h, 200 - c) for h, l, c in UP_FIRST]     # the same path reflected about the entry

@pytest.mark.parametrize("path,long_wins", [(UP_FIRST, True), (DOWN_FIRST, False)])
def test_short_and_long_differ_on_a_hand_path(path, long_wins):
    "Up path: the short's stop (101) is hit in bar 2, the long's target (102) in bar 3; reflected: the opposite"
    bars = {"1m": hand_bars(path)}
    t0 = bars["1m"].index[1]                                           # decision time: the close of bar 0
    res = {}
    for side in ("long", "short"):
        for kind in ("binary", "ternary", "regression"):
            res[side, kind] = make_labels(bars, kind, "3m", up=0.02, down=0.01, base="1m", side=side).loc[t0]
    win, lose = ("long", "short") if long_wins else ("short", "long")
    assert res[win, "binary"]["label"] == 1 and res[lose, "binary"]["label"] == 0
    assert res[win, "ternary"]["label"] == 1 and res[lose, "ternary"]["label"] == -1
    assert np.isclose(res[win, "binary"]["ret"], 0.02) and np.isclose(res[lose, "binary"]["ret"], -0.01)
    assert np.isclose(res[win, "regression"]["label"], 0.02)          # close at t + H: 102 (98), clipped to [-1%, 2%]
    assert np.isclose(res[lose, "regression"]["label"], -0.01)
    assert res[win, "binary"]["t_end"] == t0 + 3 * MIN and res[lose, "binary"]["t_end"] == t0 + 2 * MIN
    assert res[win, "binary"][["up", "down"]].tolist() == [0.02, 0.01] == res[lose, "binary"][["up", "down"]].tolist()

@pytest.mark.parametrize("kind", ["binary", "ternary", "regression"])
@pytest.mark.parametrize("base_min,with_trades", [(5, True), (15, False)])
def test_short_labels_equal_brute_force(m1, kind, base_min, with_trades):
    trades = random_trades(m1, seed=base_min) if with_trades else None
    L = make_labels({"1m": m1}, kind, "2h", up=0.004, down=0.002, trades=trades, base=f"{base_min}m", side="short")
    ref, w, excl = brute(m1, base_min, kind, 120, 0.004, 0.002, trades, side="short")
    np.testing.assert_array_equal(L["label"].to_numpy(), ref.reindex(L.index).to_numpy())
    wl = L["weight"].dropna()
    np.testing.assert_allclose(wl.to_numpy(), w.reindex(wl.index).to_numpy(), rtol=1e-12)
    assert L.attrs["ties_excluded"] == excl and L.attrs["side"] == "short"
    long_ = make_labels({"1m": m1}, kind, "2h", up=0.004, down=0.002, trades=trades, base=f"{base_min}m")
    assert not L["label"].equals(long_["label"])                       # the data does tell the sides apart

def invert(bars:pd.DataFrame)->pd.DataFrame:
    "Prices p -> 1/p: a fall becomes a rise, so high and low swap"
    out = bars.copy()
    for c, src in (("open", "open"), ("high", "low"), ("low", "high"), ("close", "close")): out[c] = 1 / bars[src]
    return out

@pytest.mark.parametrize("kind", ["binary", "ternary", "regression"])
def test_short_is_the_long_of_inverted_prices(m1, kind):
    """Long on 1/p with take-profit u/(1-u) and stop d/(1+d) is the short on p: 1/low >= (1 + u/(1-u))/entry
    iff low <= (1-u) entry, and 1/high <= (1 - d/(1+d))/entry iff high >= (1+d) entry"""
    u, d = 0.004, 0.002
    trades = random_trades(m1, seed=8)
    S = make_labels({"1m": m1}, kind, "2h", up=u, down=d, trades=trades, base="5m", side="short")
    inv_tr = trades.assign(price=1 / trades["price"])
    Li = make_labels({"1m": invert(m1)}, kind, "2h", up=u / (1 - u), down=d / (1 + d), trades=inv_tr, base="5m")
    cmp = ["t_end", "weight"] if kind == "regression" else ["label", "t_end", "weight"]
    assert S[cmp].equals(Li[cmp])
    assert np.array_equal(np.sign(S["ret"]), np.sign(Li["ret"]), equal_nan=True)   # same winners; returns on 1/p differ
    assert {k: S.attrs[k] for k in ("ties", "ties_excluded", "incomplete")} == \
           {k: Li.attrs[k] for k in ("ties", "ties_excluded", "incomplete")}
    assert S.attrs["ties"] > S.attrs["ties_excluded"] > 0 or kind == "regression"   # ties, some resolved by trades

def test_short_with_equal_distances_is_the_long_negated(m1):
    "up == down: the two barriers are the same prices, each side's target the other's stop; exact, bit for bit"
    kw = dict(horizon="2h", up=0.003, down=0.003, trades=random_trades(m1, seed=4), base="5m")
    for kind in ("binary", "ternary", "regression"):
        Lg, Ls = make_labels({"1m": m1}, kind, side="long", **kw), make_labels({"1m": m1}, kind, side="short", **kw)
        assert Ls["label"].equals(1 - Lg["label"] if kind == "binary" else -Lg["label"])
        same = ["t_end", "up", "down", "weight"]
        assert Ls["ret"].equals(-Lg["ret"]) and Ls[same].equals(Lg[same])

def test_short_atr_barriers_equal_brute_force(m1):
    L = make_labels({"1m": m1}, "ternary", "2h", up=0.02, down=0.01, atr_mult=1.5, base="5m", side="short")
    b5 = resample_bars(m1, "5m")
    a = talib.ATR(b5.high.to_numpy(), b5.low.to_numpy(), b5.close.to_numpy(), 14)
    ref, _, _ = brute(m1, 5, "ternary", 120, 0.02, 0.01, atr=a, atr_mult=1.5, side="short")
    np.testing.assert_array_equal(L["label"].to_numpy()[14:], ref.reindex(L.index).to_numpy()[14:])
    assert np.isnan(L["label"].iloc[:14]).all() and (L["label"] == 1).sum() > 20 and (L["label"] == -1).sum() > 20

def test_short_label_time_rule(m1):
    assert_label_time_rule({"1m": m1}, random_trades(m1, seed=9), "2h", 0.004, 0.002, "5m",
                           at=300, after="3min", seed=3, min_done=200, side="short")

def test_side_default_and_errors(m1):
    L = make_labels({"1m": m1}, "binary", "2h", 0.004, 0.002, base="5m")
    assert L.attrs["side"] == "long"
    assert L.equals(make_labels({"1m": m1}, "binary", "2h", 0.004, 0.002, base="5m", side="long"))
    for bad in ("Short", "sell", None):
        with pytest.raises(ValueError, match=f"^make_labels: side must be long or short, got {bad!r}$"):
            make_labels({"1m": m1}, "binary", "2h", 0.004, 0.002, base="5m", side=bad)
