"""The backtest engine: a 20-bar example computed by hand, vectorbt's accounting and same-bar rules, the time rule."""
import numpy as np
import pandas as pd
import pytest
from futbot.backtest import (BacktestConfig, Costs, prepare_symbol, run_backtest, trades_frame, order_arrays,
                             equity_curve, vbt_equity, vbt_ready, position_path_nb, coin_flip, FILL_KINDS, TARGET, STOP)
from futbot.features import synth_bars
from futbot.intervals import MINUTE_MS, index_ms, ms_index
from futbot.risk import RiskConfig

T0 = pd.Timestamp("2024-03-01", tz="UTC")
TAKER, MAKER, SLIP = 0.0005, 0.0002, 0.0002        # fees and 2 bps of slippage
#            open    high    low     close
BARS = [(100.0, 100.2, 99.8, 100.0),    # 0  decision 1 (long) at its close: stop 99, target 102
        (100.0, 100.6, 99.7, 100.4),    # 1  entry at the open
        (100.5, 102.5, 100.3, 102.2),   # 2  high >= 102: take-profit (maker, no slippage)
        (102.0, 102.1, 100.9, 101.0),   # 3  decision 2 (short) at close 101: stop 102.01, target 98.98
        (101.0, 101.5, 100.6, 101.2),   # 4  entry at the open (a sell: slippage down)
        (101.3, 102.3, 101.0, 102.0),   # 5  high >= 102.01: stop (taker + slippage)
        (101.0, 100.5, 99.6, 100.0),    # 6  decision 3 (long) at close 100: stop 99, target 102
        (100.0, 100.4, 99.8, 100.1),    # 7  entry; funding at the open of bar 9
        (100.1, 100.9, 99.9, 100.6),    # 8
        (100.6, 101.2, 100.2, 100.9),   # 9  funding time: rate 0.0005 at mark 100.2
        (100.9, 101.4, 100.5, 101.1),   # 10
        (101.1, 101.6, 100.8, 101.3),   # 11 last bar of the 5 min horizon: exit at its close
        (101.3, 101.5, 100.9, 101.0),   # 12
        (101.0, 101.1, 99.9, 100.0),    # 13 decision 4 (long) at close 100: stop 99
        (100.0, 100.3, 99.4, 99.6),     # 14 entry at the open
        (98.5, 98.9, 98.0, 98.7),       # 15 gaps through the stop: fills at the open 98.5 (+ slippage)
        (98.7, 99.0, 98.4, 98.8), (98.8, 99.1, 98.5, 98.9), (98.9, 99.2, 98.6, 99.0), (99.0, 99.3, 98.7, 99.1)]

def _hand_bars():
    o, h, l, c = (np.array(x) for x in zip(*BARS))
    h, l = np.maximum(h, np.maximum(o, c)), np.minimum(l, np.minimum(o, c))
    idx = pd.date_range(T0, periods=len(o), freq="1min", name="open_time")
    v = np.full(len(o), 1e6)
    return pd.DataFrame(dict(open=o, high=h, low=l, close=c, volume=v, quote_volume=v * c, trades=np.full(len(o), 100),
                             taker_buy_volume=v / 2, taker_buy_quote_volume=v * c / 2), index=idx)

def _hand_run():
    bars = {"1m": _hand_bars()}
    fund = pd.DataFrame({"funding_rate": [0.0005], "mark_price": [100.2]}, index=[T0 + pd.Timedelta("9min")])
    cfg = BacktestConfig(horizon="5m", base="1m", latency_ms=0, costs=Costs(TAKER, MAKER, "fixed", 2.0, 0.1, 0.0))
    rcfg = RiskConfig(cooldown_ms=0, slippage_bps=2.0, taker_fee=TAKER, max_atr_pct=1.0)
    sd = prepare_symbol("BTCUSDT", bars, {"funding": fund}, cfg)
    p = np.full((len(sd.t), 2), 0.1)
    for row, side in ((0, 0), (3, 1), (6, 0), (13, 0)): p[row, side] = 0.9
    res = run_backtest({"BTCUSDT": sd}, {"BTCUSDT": pd.DataFrame(p, columns=["p_long", "p_short"])}, cfg, rcfg)
    return res, cfg

def _hand_expected():
    "Every position worked out by hand: size from 0.5% of equity lost at the stop, fees and slippage included"
    eq, out = 10_000.0, []
    def size(eq, entry, stop): return 0.005 * eq / (abs(entry - stop) + (TAKER + SLIP) * (entry + stop))
    # 1 long: entry 100 x (1 + slip), target 102 (maker)
    q = size(eq, 100.0, 99.0)
    e, x = 100.0 * (1 + SLIP), 102.0
    out.append(dict(qty=q, pnl=q * (x - e) - TAKER * q * e - MAKER * q * x, reason="target", funding=0.0))
    eq += out[-1]["pnl"]
    # 2 short: sold at 101 x (1 - slip), stopped at 102.01 x (1 + slip)
    stop = 101.0 * 1.01
    q = size(eq, 101.0, stop)
    e, x = 101.0 * (1 - SLIP), stop * (1 + SLIP)
    out.append(dict(qty=q, pnl=q * (e - x) - TAKER * q * (e + x), reason="stop", funding=0.0))
    eq += out[-1]["pnl"]
    # 3 long: one funding payment (long pays a positive rate), horizon exit at the close of bar 11
    q = size(eq, 100.0, 99.0)
    e, x = 100.0 * (1 + SLIP), 101.3 * (1 - SLIP)
    f = -q * 100.2 * 0.0005
    out.append(dict(qty=q, pnl=q * (x - e) - TAKER * q * (e + x) + f, reason="horizon", funding=f))
    eq += out[-1]["pnl"]
    # 4 long: the open of bar 15 gaps through the stop: filled at 98.5 x (1 - slip)
    q = size(eq, 100.0, 99.0)
    e, x = 100.0 * (1 + SLIP), 98.5 * (1 - SLIP)
    out.append(dict(qty=q, pnl=q * (x - e) - TAKER * q * (e + x), reason="stop", funding=0.0))
    return out, eq + out[-1]["pnl"]

def test_hand_computed_example_to_the_cent():
    res, cfg = _hand_run()
    tr = trades_frame(res)
    exp, final = _hand_expected()
    assert list(tr["exit_reason"]) == [x["reason"] for x in exp]
    assert list(tr["side"]) == ["long", "short", "long", "long"]
    for (_, r), x in zip(tr.iterrows(), exp):
        assert abs(r["pnl"] - x["pnl"]) < 0.005, (r["pnl"], x["pnl"])
        assert abs(r["funding"] - x["funding"]) < 0.005
        assert abs(r["qty"] - x["qty"]) < 1e-9
    assert tr.loc[3, "exit_price"] == pytest.approx(98.5 * (1 - SLIP))       # the gap: the open, not the stop
    assert tr.loc[2, "funding"] < 0                                           # the long paid
    eq = equity_curve(res)
    assert abs(eq.iloc[-1] - final) < 0.005
    assert tr["r_multiple"].iloc[1] == pytest.approx(tr["pnl"].iloc[1] / tr["risk_amount"].iloc[1])
    assert list(tr["entry_time"]) == [str(T0 + pd.Timedelta(f"{m}min"))[:19].replace(" ", "T") + "Z" for m in (1, 4, 7, 14)]

def test_vectorbt_accounting_equals_engine():
    "The same fills through vectorbt's from_orders: same equity to 1e-9, on the hand example and a 2-symbol run"
    res, _ = _hand_run()
    a = order_arrays(res)
    assert np.max(np.abs(equity_curve(res, a).to_numpy() - vbt_equity(res, a).to_numpy())) < 1e-9 * 10_000
    cfg = BacktestConfig()
    rcfg = RiskConfig(partial_take_profits=((1.0, 0.5),))
    data = {s: prepare_symbol(s, {"1m": synth_bars(60 * 24 * 10, seed=k, vol=0.0012)}, None, cfg)
            for k, s in enumerate(("BTCUSDT", "ETHUSDT"))}
    for sd in data.values():
        n = len(sd.po) // 480
        sd.ft = sd.po[::480][:n].copy()
        sd.rate, sd.mark = np.random.default_rng(1).normal(1e-4, 3e-4, n), np.zeros(n)
    res2 = run_backtest(data, {s: coin_flip(sd, 4) for s, sd in data.items()}, cfg, rcfg)
    tr = trades_frame(res2)
    assert tr["partial_exits"].sum() > 0 and (tr["funding"] != 0).sum() > 0 and set(tr["symbol"]) == set(data)
    a = order_arrays(res2)
    own, vb = equity_curve(res2, a).to_numpy(), vbt_equity(res2, a).to_numpy()
    assert np.max(np.abs(own - vb)) < 1e-9 * 10_000
    assert own[-1] == pytest.approx(10_000 + tr["pnl"].sum(), abs=1e-6)

def test_same_bar_rules_match_vectorbt_from_signals():
    "Stops and targets through our kernel and through vectorbt's from_signals: the same exit bar and price"
    vbt = vbt_ready()
    rng = np.random.default_rng(3)
    n, gap = 30_000, 300
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.0003, n)))
    o = np.r_[100, c[:-1]] * np.exp(rng.normal(0, 0.002, n) * (rng.random(n) < 0.05))   # some gaps
    h = np.maximum(o, c) * (1 + rng.exponential(0.0002, n))
    l = np.minimum(o, c) * (1 - rng.exponential(0.0002, n))
    entries, exits = np.zeros(n, bool), np.zeros(n, bool)
    price = c.copy()
    sides = rng.choice([1, -1], n // gap)
    sl, tp = 0.006, 0.012
    ours = []
    for k, e in enumerate(range(10, n - gap, gap)):
        end = e + 240
        entries[e], exits[end], price[e] = True, True, o[e]
        sd = sides[k]
        stop, target = o[e] * (1 - sd * sl), o[e] * (1 + sd * tp)
        bar, frac, px, kind = position_path_nb(o, h, l, c, e, end, sd, stop, target, -1.0 if sd > 0 else 1e12,
                                               np.zeros(0), np.zeros(0))
        last = int(np.flatnonzero(kind >= 0)[-1])
        ours.append((bar[last], px[last] if kind[last] in (TARGET, STOP) else c[end], FILL_KINDS[kind[last]]))
    idx = pd.date_range("2024-01-01", periods=n, freq="1min")
    col = lambda a: pd.Series(a, index=idx)
    ls, ss = entries.copy(), entries.copy()
    ls[10:n - gap:gap] = sides[:len(ours)] > 0
    ss[10:n - gap:gap] = sides[:len(ours)] < 0
    price[exits] = c[exits]
    pf = vbt.Portfolio.from_signals(col(c), entries=col(ls), exits=col(exits), short_entries=col(ss),
                                    short_exits=col(exits),
                                    open=col(o), high=col(h), low=col(l), price=col(price), size=1.0,
                                    sl_stop=sl, tp_stop=tp, stop_entry_price="price", init_cash=1e9, freq="1min")
    tr = pf.positions.records_readable       # vectorbt has no horizon: an exit signal at our horizon bar, at its close
    assert len(tr) == len(ours) and {w for _, _, w in ours} == {"stop", "target", "horizon"}
    assert sum(px == o[bar] for bar, px, w in ours if w != "horizon") >= 1       # a gap through a level is among them
    for (bar, px, why), (_, r) in zip(ours, tr.iterrows()):
        assert (int(idx.get_loc(r["Exit Timestamp"])), r["Avg Exit Price"]) == (bar, pytest.approx(px, rel=1e-12)), why

def test_decisions_before_t_ignore_everything_after_t():
    "Perturb every bar and funding value after T: each decision at or before T, and its size, is unchanged"
    cfg = BacktestConfig()
    def run(perturb):
        data = {}
        for k, s in enumerate(("BTCUSDT", "ETHUSDT")):
            b = synth_bars(60 * 24 * 12, seed=10 + k, vol=0.0012)
            if perturb:
                late = b.index >= T              # the bar opening at T closes after T
                f = np.exp(np.random.default_rng(k).normal(0, 0.01, late.sum()))
                for col in ("open", "high", "low", "close"): b.loc[late, col] = b.loc[late, col] * f
                b.loc[late, "high"] = b.loc[late, ["open", "high", "low", "close"]].max(axis=1)
                b.loc[late, "low"] = b.loc[late, ["open", "high", "low", "close"]].min(axis=1)
            data[s] = prepare_symbol(s, {"1m": b}, None, cfg)
        return run_backtest(data, {s: coin_flip(sd, 9) for s, sd in data.items()}, cfg, RiskConfig())
    T = pd.Timestamp("2024-01-07 13:00", tz="UTC")
    a, b = run(False), run(True)
    da, db = (r.decisions[r.decisions["t"] <= T].reset_index(drop=True) for r in (a, b))
    assert len(da) > 100
    pd.testing.assert_frame_equal(da, db)
    key = lambda r: [(p.symbol, p.decision_ms, p.qty, p.stop, p.target) for p in r.positions if p.decision_ms <= T.value // 10 ** 6]
    assert key(a) == key(b)
    assert [p.pnl for p in a.positions][-5:] != [p.pnl for p in b.positions][-5:]   # the perturbation did bite

def test_kernel_equals_its_python_source():
    "The compiled fill kernel against its own Python source on random paths, partial targets included"
    rng = np.random.default_rng(11)
    for k in range(300):
        n = 40
        c = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
        o = np.r_[100, c[:-1]] * np.exp(rng.normal(0, 0.003, n))
        h, l = np.maximum(o, c) * (1 + rng.exponential(0.002, n)), np.minimum(o, c) * (1 - rng.exponential(0.002, n))
        side = 1 if k % 2 else -1
        stop, target, liq = 100 * (1 - side * 0.01), 100 * (1 + side * 0.02), 100 * (1 - side * 0.012)
        ppx = np.array([100 * (1 + side * 0.005), 100 * (1 + side * 0.01)])[: k % 3]
        pfr = np.array([0.3, 0.3])[: k % 3]
        args = (o, h, l, c, 1, 30, side, stop, target, liq, ppx, pfr)
        for a, b in zip(position_path_nb(*args), position_path_nb.py_func(*args)):
            np.testing.assert_array_equal(a, b)

def test_stored_book_feeds_the_liquidity_filter():
    "A wide spread in the stored book refuses entries as low_liquidity; a stale snapshot is no book at all"
    from futbot.backtest import book_at
    bars = {"1m": synth_bars(60 * 24 * 3, seed=5, vol=0.0012)}
    cfg = BacktestConfig()
    t = bars["1m"].index[::5]
    mid = bars["1m"]["close"].to_numpy()[::5]
    wide = np.where(t < t[len(t) // 2], 0.0005, 0.01)                   # 1 bp, then 200 bps in the second half
    book = pd.DataFrame({"bid_px_1": mid * (1 - wide), "ask_px_1": mid * (1 + wide), "bid_sz_1": 100.0, "ask_sz_1": 100.0},
                        index=t)
    sd = prepare_symbol("BTCUSDT", bars, {"book": book}, cfg)
    res = run_backtest({"BTCUSDT": sd}, {"BTCUSDT": coin_flip(sd, 2)}, cfg, RiskConfig())
    half = book.index[len(t) // 2].value // 10 ** 6
    late = res.decisions[index_ms(res.decisions["t"]) > half + 10 * MINUTE_MS]
    assert (late["reason"] == "low_liquidity").sum() > 20
    assert all(p.decision_ms < half + 5 * MINUTE_MS for p in res.positions)
    assert res.refusals["low_liquidity"] > 0
    stale = book_at(book.iloc[:1], np.array([index_ms(book.index)[0] + 6 * MINUTE_MS]))
    assert np.isnan(stale).all()
    fresh = book_at(book.iloc[:1], np.array([index_ms(book.index)[0] + 60_000]))
    assert fresh[0, 0] == pytest.approx(10.0) and fresh[0, 1] == pytest.approx(100 * book["bid_px_1"].iloc[0])

def test_marks_never_count_a_fill_of_an_unclosed_bar():
    "At t the take-profit filled inside the bar opening at t is not known yet: equity marks the open position instead"
    res, _ = _hand_run()
    p = res.positions[0]                                  # long from bar 1's open, target hit inside bar 2
    t = int((T0 + pd.Timedelta("2min")).value // 10 ** 6)    # bar 2 opens at t and closes a minute later
    close1 = BARS[1][3]
    assert p.value_at(t, close1) == pytest.approx(p.qty * (close1 - p.px[0]) - p.fee[0])
    assert p.value_at(t + MINUTE_MS, 0.0) == pytest.approx(p.pnl)   # at the bar's close the exit is known
