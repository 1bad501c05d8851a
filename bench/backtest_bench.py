"""Backtest figures: 300k 1m bars with stops and funding after the JIT, the JIT cold and warm, and the ratio to a bare
vectorbt from_signals on the same bars and entries."""
import os, subprocess, sys, tempfile, time
import numpy as np
import pandas as pd

N_BARS = 300_000
SNIPPET = ("from futbot.features import synth_bars; from futbot import backtest as bt; "
           "sd = bt.prepare_symbol('BTCUSDT', {'1m': synth_bars(20000, seed=1)}, None, bt.BacktestConfig()); "
           "r = bt.run_backtest({'BTCUSDT': sd}, {'BTCUSDT': bt.coin_flip(sd, 1)}); "
           "bt.vbt_equity(r); bt.backtest_summary(r, bt.equity_curve(r), bt.trades_frame(r))")

def _data():
    from futbot import backtest as bt
    from futbot.features import synth_bars
    bars = {"1m": synth_bars(N_BARS, seed=1, vol=0.0009)}
    po = bars["1m"].index[::480]                                    # funding every 8 h, rates around 1 bp
    fund = pd.DataFrame({"funding_rate": np.random.default_rng(2).normal(1e-4, 2e-4, len(po)),
                         "mark_price": bars["1m"]["open"].to_numpy()[::480]}, index=po)
    return bt, bars, {"funding": fund}

def full_run(bt, bars, extras):
    "Everything `futbot backtest` computes, without writing files or the report"
    cfg = bt.BacktestConfig()
    sd = bt.prepare_symbol("BTCUSDT", bars, extras, cfg)
    res = bt.run_backtest({"BTCUSDT": sd}, {"BTCUSDT": bt.coin_flip(sd, 1)}, cfg)
    a = bt.order_arrays(res)
    eq = bt.vbt_equity(res, a)
    bt.equity_curve(res, a)
    tr = bt.trades_frame(res)
    bt.backtest_summary(res, eq, tr)
    return res

def bare_from_signals(vbt, bars, res):
    "vectorbt's from_signals on the same bars with the same entries, stops and targets (no risk rules, no funding)"
    b = bars["1m"].set_axis(bars["1m"].index.tz_localize(None))
    sd = res.data["BTCUSDT"]
    long_e, short_e = np.zeros(len(b), bool), np.zeros(len(b), bool)
    for p in res.positions: (long_e if p.side > 0 else short_e)[p.bar[0]] = True
    t = time.perf_counter()
    pf = vbt.Portfolio.from_signals(b["close"], entries=long_e, short_entries=short_e, open=b["open"], high=b["high"],
                                    low=b["low"], price=b["open"], size=1.0, sl_stop=0.01, tp_stop=0.02, fees=0.0005,
                                    init_cash=1e9, freq="1min")
    pf.value()
    return time.perf_counter() - t

def _cold_warm():
    "Wall time of a new process running a small backtest with an empty numba cache, then again with it filled"
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "NUMBA_CACHE_DIR": d}
        out = []
        for _ in range(2):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", SNIPPET], env=env, check=True, capture_output=True)
            out.append(round(time.perf_counter() - t, 2))
        return out

def bench_figures():
    bt, bars, extras = _data()
    vbt = bt.vbt_ready()
    res = full_run(bt, bars, extras)                 # the JIT, once
    bare_from_signals(vbt, bars, res)
    t = time.perf_counter()
    res = full_run(bt, bars, extras)
    ours = time.perf_counter() - t
    bare = min(bare_from_signals(vbt, bars, res) for _ in range(2))
    cold, warm = _cold_warm()
    return {"backtest_300k_s": round(ours, 3), "backtest_vs_vectorbt_ratio": round(ours / bare, 2),
            "backtest_jit_cold_s": cold, "backtest_jit_warm_s": warm, "backtest_300k_positions": len(res.positions)}
