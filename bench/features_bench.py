"""Features and labels figures for `make bench` (bench/run.py calls `bench_figures()`).

- features_7mo_s: `build_features` on 7 months (213 days) of synthetic 1m bars with all timeframes
  (1m 5m 1h 4h 1d, higher ones resampled beforehand as `load_bars` would return them), base 5m.
- labels_300k_s: `make_labels` (binary, 4h, +2%/-1%, barriers on 1m) with a 1m base: 300k decision times.
- live_feature_update_ms: mean time of `LiveFeatures.row` over one replayed day (288 base closes,
  all timeframes, 2000-bar buffers; the update recomputes the timeframes whose buffer changed).
- live_feature_update_pta3_ms: the same with three pandas-ta indicators configured (`features.pandas_ta`:
  kama, cci, bbands) on every timeframe; each runs on its probed live window, not the whole buffer.
Numba kernels are compiled (or loaded from cache) on a small input before timing; pandas-ta entries are
probed (once per process) before timing too. The batch build with the three indicators is timed on stderr."""
import sys, time
import numpy as np, pandas as pd

PTA3 = [{"kind": "kama", "length": 10}, {"kind": "cci", "length": 20}, {"kind": "bbands", "length": 20}]

def live_update_ms(bars:dict, X:pd.DataFrame, cfg:dict)->float:
    "Mean ms of `LiveFeatures.row` over the last day of `X`; the last row must equal the batch one"
    from futbot.features import LiveFeatures
    from futbot.intervals import interval_ms
    lf, ts = LiveFeatures(config=cfg), X.index[-288:]
    close = {tf: b.index + pd.Timedelta(milliseconds=interval_ms(tf)) for tf, b in bars.items()}
    for tf, b in bars.items(): lf.add_bars(tf, b[close[tf] <= ts[0] - pd.Timedelta("5min")].iloc[-2000:])
    times = []
    for tm in ts:
        for tf, b in bars.items():
            new = b[(close[tf] <= tm) & (b.index > lf.bars[tf].index[-1])]
            if len(new): lf.add_bars(tf, new)
        t = time.perf_counter()
        r = lf.row(tm)
        times.append(time.perf_counter() - t)
    assert np.allclose(r.to_numpy(), X.loc[[tm]].to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True)
    print(f"bench: live update p50 {np.median(times) * 1e3:.1f} ms, max {max(times) * 1e3:.1f} ms"
          f" ({len(X.columns)} features)", file=sys.stderr)
    return round(float(np.mean(times)) * 1e3, 2)

def bench_figures()->dict:
    from futbot.features import synth_bars, resample_bars, build_features, PTA_KEY
    from futbot.labels import make_labels
    cfg = {"data.timeframes": ["1m", "5m", "1h", "4h", "1d"], "data.base_timeframe": "5m"}
    cfg_pta = {**cfg, PTA_KEY: PTA3}
    small = synth_bars(60 * 24 * 3, seed=1)                                   # JIT warm-up, pandas-ta probes
    build_features({"1m": small}, config=cfg_pta, drop_warmup=False)
    make_labels({"1m": small}, "binary", "4h", 0.02, 0.01, base="1m")
    m1 = synth_bars(60 * 24 * 213, seed=42)
    bars = {tf: resample_bars(m1, tf) for tf in cfg["data.timeframes"]}
    t = time.perf_counter()
    X = build_features(bars, config=cfg)
    feat_s = time.perf_counter() - t
    print(f"bench: features {X.shape} in {feat_s:.2f} s", file=sys.stderr)
    m300 = m1.iloc[:300_000]
    t = time.perf_counter()
    L = make_labels({"1m": m300}, "binary", "4h", 0.02, 0.01, base="1m")
    lab_s = time.perf_counter() - t
    print(f"bench: labels {len(L)} rows in {lab_s:.2f} s", file=sys.stderr)
    live_ms = live_update_ms(bars, X, cfg)
    t = time.perf_counter()
    Xp = build_features(bars, config=cfg_pta)
    pta_s = time.perf_counter() - t
    print(f"bench: features with 3 pandas-ta indicators {Xp.shape} in {pta_s:.2f} s", file=sys.stderr)
    return {"features_7mo_s": round(feat_s, 3), "labels_300k_s": round(lab_s, 3), "live_feature_update_ms": live_ms,
            "live_feature_update_pta3_ms": live_update_ms(bars, Xp, cfg_pta)}

if __name__ == "__main__":
    import json
    print(json.dumps(bench_figures()))
