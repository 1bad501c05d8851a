"""Live-path figures for `make bench` (bench/run.py calls `bench_figures()`), on two months of BTCUSDT and ETHUSDT (klines
and the default extras: funding, open interest, mark and index) from a running `futbot sim` (default alpha, seed 4,
1200 simulated seconds per wall second) and a LightGBM pair per symbol from `futbot train` (no tuning, even 1% barriers
so that the models are confident enough to signal).

- replay_bars_per_s: `futbot.live.replay` of two simulated days for both symbols, base bars x symbols per wall second.
- signal_latency_p50_ms, signal_latency_p99_ms: `futbot serve` on the running sim: from the moment the base bar that
  triggers a decision is received to the signed signal fsynced, per signal (the audit log's latency_ms), at a threshold
  the models reach on about a tenth of the bars so that there are signals to time.
- serve_rss_mb: resident memory of that `futbot serve` process after one simulated day (72 wall seconds)."""
import json, os, signal, subprocess, tempfile, time
from pathlib import Path
import numpy as np

SERVE_S = 72.0     # wall seconds of serving: one simulated day at 1200x
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
LABELS = "labels:\n  profit_threshold: 0.01\n  stop_threshold: 0.01\n"
KEYS = dict(FUTBOT_HMAC_KEYS="k1=bench-secret-0123456789", FUTBOT_HMAC_KEY_ID="k1",
            FUTBOT_API_TOKENS="bench-token-0123456789abc")

def trained_market(d:Path, url:str)->tuple:
    "Download both symbols, train and approve a LightGBM pair each, write low.yaml (a tenth of bars pass): (cfg, models, feeds)"
    from run import BIN
    from futbot import history as h
    from futbot.config import load_config
    from futbot.intervals import to_ms
    from futbot.live import LiveModel, load_feed, batch_proba
    for s in SYMBOLS:
        h.download(s, h.DEFAULT_DATASETS, ["1m", "5m", "1h", "4h", "1d"], price_interval="5m", months=2, exchange=url,
                   data_dir=d / "data", progress=False)
    (d / "cfg.yaml").write_text("training:\n  walk_forward_folds: 3\n  max_features: 40\n" + LABELS)
    run = lambda *a: subprocess.run([str(BIN / "futbot"), *a], capture_output=True, text=True)
    for s in SYMBOLS:
        run("train", "--symbol", s, "--models", "lgbm", "--n-trials", "0", "--data-dir", str(d / "data"),
            "--artifacts-dir", str(d / "art"), "--config", str(d / "cfg.yaml"), "--seed", "1")
        run("registry", "approve", f"lgbm-{s}", "1.0.0", "--reason", "bench", "--artifacts-dir", str(d / "art"))
    cf = load_config(d / "cfg.yaml")
    models = {s: LiveModel.load(d / "art" / "models" / f"lgbm-{s}" / "1.0.0") for s in SYMBOLS}
    feeds = {s: load_feed(s, d / "data", cf, 0, to_ms("2030-01-01")) for s in SYMBOLS}
    tops = [batch_proba(feeds[s], models[s]).tail(2000).max(axis=1).quantile(0.9) for s in SYMBOLS]
    (d / "low.yaml").write_text(f"signals:\n  min_confidence: {max(0.5, min(tops)):.9f}\n  cooldown: 15m\n" + LABELS)
    return cf, models, feeds

def start_serve(d:Path, url:str, **env):
    "A `futbot serve` process on the market of `trained_market` (its logs in d/logs), once it has started"
    import psutil
    from run import BIN
    p = psutil.Popen([str(BIN / "futbot"), "serve", "--exchange", url, "--port", "0", "--data-dir", str(d / "data"),
                      "--artifacts-dir", str(d / "art"), "--config", str(d / "low.yaml")],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                     env=dict(os.environ, **KEYS, FUTBOT_LOG_DIR=str(d / "logs"), **env))
    line = p.stdout.readline()
    if not line.startswith("futbot serve: http"): raise RuntimeError("futbot serve did not start")
    return p, line.split()[2]

def latencies(d:Path)->list:
    "latency_ms of every live signal in the audit log"
    lat = [json.loads(l).get("latency_ms") for l in open(d / "logs" / "audit.log")]
    return [x for x in lat if x is not None]

def bench_figures()->dict:
    from run import sim_process, log
    from futbot.intervals import to_ms
    from futbot.live import replay
    from futbot.backtest import BacktestConfig
    from futbot.risk import RiskConfig
    out = {}
    with tempfile.TemporaryDirectory() as d, sim_process("--months", "2", "--seed", "4", "--speed", "1200") as url:
        d = Path(d)
        cf, models, feeds = trained_market(d, url)
        lo = to_ms("2024-02-18")
        t = time.perf_counter()
        res = replay(feeds, models, lo, lo + 2 * 86_400_000, BacktestConfig.from_config(cf), RiskConfig.from_config(cf))
        out["replay_bars_per_s"] = round(res.bars * len(SYMBOLS) / (time.perf_counter() - t), 1)
        log(f"live bench: replay {res.bars} bars x {len(SYMBOLS)} symbols, {len(res.signals)} signals")
        p, _ = start_serve(d, url)
        try:
            time.sleep(SERVE_S)
            out["serve_rss_mb"] = round(p.memory_info().rss / 2**20)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        lat = latencies(d)
        log(f"live bench: {len(lat)} live signals timed")
        if lat:
            out["signal_latency_p50_ms"] = round(float(np.percentile(lat, 50)), 2)
            out["signal_latency_p99_ms"] = round(float(np.percentile(lat, 99)), 2)
    return out
