"""Training figures for `make bench` (bench/run.py calls `bench_figures()`), on 7 months of BTCUSDT from `futbot sim`.

- train_lgbm_7mo_s: one LightGBM fit (the default 400 rounds, no early stopping) of the long side on the training rows
  (70% of 7 months of 5m decisions) with the full feature set (every column of the table).
- optuna_trials_per_min: `futbot.tune.tune` of LightGBM on the purged walk-forward folds of the training rows
  (5 folds, the selected 80 features, SQLite storage in a temporary folder), trials finished per minute.
- predict_row_ms: one live row through the model and its calibrator (median of 200 single-row calls).
- train_select_features_s: `select_features` (decorrelation, importance and mutual information) on the training rows."""
import tempfile, time
import numpy as np

def bench_figures(n_trials:int=8)->dict:
    from run import sim_process, log
    from futbot import history as h
    from futbot.config import load_config
    from futbot.retrain import load_train_data
    from futbot.train import make_model, select_features, walk_forward, uniqueness, choose_calibrator, oof_predict
    from futbot.tune import tune
    from futbot.intervals import index_ms
    cfg, out = load_config(), {}
    with tempfile.TemporaryDirectory() as d:
        with sim_process("--months", "7", "--seed", "1") as url:
            h.download("BTCUSDT", ["klines", "funding"], ["1m", "5m", "1h", "4h", "1d"], months=7, exchange=url,
                       data_dir=f"{d}/data", progress=False)
        dd = load_train_data("BTCUSDT", f"{d}/data", cfg)
        tr = dd.rows("long", 0)
        X, y = dd.X.iloc[tr], dd.labels["long"]["label"].to_numpy(float)[tr]
        log(f"train bench: {X.shape[0]} training rows x {X.shape[1]} features")
        t = time.perf_counter()
        m = make_model("lgbm", {}, 42).fit(X, y)
        out["train_lgbm_7mo_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        cols, _ = select_features(X, [y], max_features=80, max_drift=cfg["training.max_drift"])
        out["train_select_features_s"] = round(time.perf_counter() - t, 2)
        lab = dd.labels["long"]
        tt, te = index_ms(dd.X.index)[tr], index_ms(lab["t_end"])[tr]
        folds = walk_forward(tt, te, 5, "expanding", embargo=cfg["labels.horizon"])
        w = uniqueness(tt, te, 300_000)
        t = time.perf_counter()
        res = tune("lgbm", X[cols], y, folds, w, n_trials, f"sqlite:///{d}/optuna.db", seed=42, progress=False, t_end=te,
                   artifacts_dir=d)
        out["optuna_trials_per_min"] = round(res.n_trials / (time.perf_counter() - t) * 60, 1)
        small = make_model("lgbm", res.best_params, 42).fit(X[cols], y)
        cal, _ = choose_calibrator(oof_predict("lgbm", X[cols], y, folds, w, res.best_params), y)
        row = X[cols].iloc[-1:]
        small.predict_proba(row)
        ts = []
        for _ in range(200):
            t = time.perf_counter()
            cal(small.predict_proba(row))
            ts.append(time.perf_counter() - t)
        out["predict_row_ms"] = round(float(np.median(ts)) * 1000, 3)
    return out
