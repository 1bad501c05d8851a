"""`make bench`: measure the performance budget of DESIGN.md and print ONE JSON object on stdout.

Every key carries its unit. A figure whose stage is not built yet is absent, never faked.
Each stage contributes one function below; progress goes to stderr."""
import json, os, signal, subprocess, sys, tempfile, time, importlib
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "bench"))

def log(msg): print(f"bench: {msg}", file=sys.stderr, flush=True)

@contextmanager
def sim_process(*args):
    "A real `futbot sim` process on a free port (7 months, BTCUSDT and ETHUSDT by default); yields its URL"
    p = subprocess.Popen([str(BIN / "futbot"), "sim", "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = p.stdout.readline().strip()
        if not url.startswith("http"): raise RuntimeError("futbot sim did not start")
        yield url
    finally:
        p.send_signal(signal.SIGTERM)
        try: p.wait(20)
        except subprocess.TimeoutExpired: p.kill()

def cli_help_s():
    "Wall time of `futbot --help` (start-up cost of the console script)"
    t = time.perf_counter()
    subprocess.run([str(BIN / "futbot"), "--help"], check=True, capture_output=True)
    return {"cli_help_s": round(time.perf_counter() - t, 3)}

def sim_figures():
    "Local exchange: generate 7 months of 1m klines for 2 symbols; REST requests per second"
    sim, exchange = importlib.import_module("futbot.sim"), importlib.import_module("futbot.exchange")
    return {"sim_generate_7mo_s": round(sim.bench_generate(months=7), 2),
            "sim_rest_req_per_s": round(exchange.bench_rest(), 1)}

def download_figures():
    "Download: 7 months of BTCUSDT 1m klines from the local exchange at Binance weights"
    h = importlib.import_module("futbot.history"); b = importlib.import_module("futbot.binance")
    out = {}
    with tempfile.TemporaryDirectory() as d, sim_process() as url:
        rest = b.Rest(url, b.WeightLimiter(2400, 60))
        t = time.perf_counter()
        res = h.download("BTCUSDT", ["klines"], ["1m"], months=7, exchange=url, data_dir=d, progress=False, rest=rest)
        dt = time.perf_counter() - t
        rows = sum(r.rows for r in res)
        out.update(download_7mo_1m_s=round(dt, 2), download_7mo_1m_rows=rows, download_rows_per_s=round(rows / dt),
                   download_7mo_1m_weight=rest.limiter.total)
        n429 = rest.limiter.n429
    # weight-budget use: the same download made rate-bound by a budget scaled to 600 per 15 s (2400/min),
    # so that it spans several windows; use = weight spent per full window / budget
    with tempfile.TemporaryDirectory() as d, sim_process("--weight-limit", "600", "--rate-window-s", "15") as url:
        rest = b.Rest(url, b.WeightLimiter(600, 15))
        h.download("BTCUSDT", ["klines"], ["1m"], months=7, exchange=url, data_dir=d, progress=False, rest=rest)
        out.update(download_weight_use=round(rest.limiter.usage(), 3), download_429s=n429 + rest.limiter.n429)
    return out

def features_figures():
    "Features and labels: 7 months of 1m data, 300k labels, one live update"
    return importlib.import_module("features_bench").bench_figures()

def streams_figures():
    "Streams: aggTrade ingest into bars, resident memory after one simulated hour"
    return importlib.import_module("streams_bench").bench_figures()

def backtest_figures():
    "Backtest: 300k 1m bars with stops and funding after the JIT, the JIT cold and warm, the ratio to bare vectorbt"
    return importlib.import_module("backtest_bench").bench_figures()

def train_figures():
    "Training: one LightGBM fit on 7 months of 5m rows, Optuna trials per minute, one live row through model and calibrator"
    return importlib.import_module("train_bench").bench_figures()

def live_figures():
    "Replay speed, signal latency and the service's memory (futbot.live, futbot serve)"
    return importlib.import_module("live_bench").bench_figures()

def demo_figures():
    "The demo: wall time and peak resident memory of `futbot demo` (process and children)"
    import psutil
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        p = psutil.Popen([str(BIN / "futbot"), "demo", "--data-dir", f"{d}/data", "--artifacts-dir", f"{d}/artifacts"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "FUTBOT_LOG_DIR": f"{d}/logs"})
        peak = 0
        while p.poll() is None:
            try: peak = max(peak, sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]))
            except psutil.Error: pass
            time.sleep(0.2)
        if p.returncode != 0: raise RuntimeError(f"futbot demo exited {p.returncode}")
        return {"demo_s": round(time.perf_counter() - t, 1), "demo_peak_rss_mb": round(peak / 2**20)}

def site_figures():
    "Report site: `futbot report` over a small artifacts folder (a backtest with its report, made as the tests make one)"
    importlib.import_module("futbot.report")
    import numpy as np, pandas as pd
    from futbot.dataset import store_bars
    from futbot.features import synth_bars
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        store_bars(synth_bars(60 * 24 * 16, seed=3, vol=0.0012, start="2024-03-01"), "BTCUSDT", "1m", d / "data")
        t = pd.date_range("2024-03-05 00:05", "2024-03-12", freq="5min", tz="UTC")
        u = np.random.default_rng(0).random(len(t))
        pd.DataFrame({"p_long": u, "p_short": 1 - u}, index=t).to_parquet(d / "p.parquet")
        env = {**os.environ, "FUTBOT_HOME": str(ROOT), "FUTBOT_LOG_DIR": str(d / "logs")}
        common = ["--data-dir", str(d / "data"), "--artifacts-dir", str(d / "artifacts")]
        subprocess.run([str(BIN / "futbot"), "backtest", "--symbol", "BTCUSDT", "--proba", str(d / "p.parquet"),
                        "--start", "2024-03-05", "--end", "2024-03-12", *common], check=True, capture_output=True, env=env, cwd=d)
        t0 = time.perf_counter()
        subprocess.run([str(BIN / "futbot"), "report", *common, "--out", str(d / "_site")], check=True, capture_output=True,
                       env=env, cwd=d)
        return {"site_build_s": round(time.perf_counter() - t0, 2), "site_pages": sum(1 for _ in (d / "_site").rglob("*.html"))}

def monitor_figures():
    "Monitor: one drift and performance pass over 7 days of live rows (2016 five-minute rows, 150 closed bets) of a model"
    import statistics
    import numpy as np, pandas as pd
    from futbot.alerts import AlertStore
    from futbot.backtest import Position
    from futbot.config import load_config
    from futbot.drift import model_reference, save_reference
    from futbot.features import synth_bars, build_features
    from futbot.intervals import index_ms
    from futbot.monitor import LiveMonitor
    from futbot.registry import synth_model_folder, SYNTH_FEATURES
    from futbot.serve import Service
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        folder = synth_model_folder(d / "m")
        feats = lambda seed, start, days: build_features({"1m": synth_bars(days * 1440, seed=seed, start=start, vol=0.0008)},
                                                         config=SYNTH_FEATURES)
        env = {"FUTBOT_HMAC_KEYS": "k1=bench-secret-0123456789", "FUTBOT_HMAC_KEY_ID": "k1", "FUTBOT_API_TOKENS": "bench-token-0123456789"}
        cf = load_config(overrides={"labels.horizon": "1h", "monitoring.auto_retrain": False})
        svc = Service(cf, {"BTCUSDT": folder}, "http://127.0.0.1:9", d / "data", d / "art", env=env)
        m = svc.models["BTCUSDT"]
        proba = lambda X: pd.DataFrame({f"p_{s}": m.cals[s](m.models[s].predict_proba(X[m.features])) for s in ("long", "short")},
                                       index=X.index)
        Xtr = feats(1, "2024-01-01", 14)
        save_reference(folder, model_reference(Xtr[m.features], proba(Xtr)))
        svc.alerts = AlertStore(d / "alerts.db", deliver=False)
        mon = LiveMonitor(svc)
        live = feats(2, "2024-01-15", 8)
        live = live[live.index.minute % 5 == 0]                     # five-minute decisions
        t = index_ms(live.index)
        live, t = live[t > t[-1] - 7 * 86_400_000], t[t > t[-1] - 7 * 86_400_000]
        P = proba(live)
        rows = [(int(a), x, pl, ps) for a, x, pl, ps in zip(t, live[m.features].to_numpy(float), P.p_long, P.p_short)]
        rng, done = np.random.default_rng(0), []
        for k in range(150):                                        # closed bets spread over the week
            t0 = int(t[0] + (t[-1] - t[0]) * k / 150); win = rng.random() < 0.5
            px = np.array([100.0, 101.0 if win else 99.0])
            done.append(Position("BTCUSDT", 1, t0, 0.6, 1.0, 1, 99.0, 101.0, 0.0, 1.0, np.array([0, 12]), np.array([1.0, -1.0]), px,
                                 np.array([0.01, 0.01]), np.zeros(2), np.array([0, 1 if win else 2]),
                                 np.array([t0, t0 + 3_600_000]), np.array([t0, t0 + 3_600_000]), np.zeros(0), np.zeros(0),
                                 t0 + 3_600_000))
        times = []
        for _ in range(7):
            t1 = time.perf_counter()
            rep = mon.check(int(t[-1]), {"BTCUSDT": rows}, done)
            times.append(1000 * (time.perf_counter() - t1))
        assert rep["symbols"]["BTCUSDT"]["performance"]["trades"] == 150, rep
        return {"monitor_cycle_ms": round(statistics.median(times[1:]), 1), "monitor_cycle_rows": len(rows)}

FIGURES = [cli_help_s, sim_figures, download_figures, features_figures, streams_figures, backtest_figures, train_figures,
           live_figures, monitor_figures, demo_figures, site_figures]

def main():
    out = {}
    only = sys.argv[1:]
    for fn in FIGURES:
        if only and fn.__name__ not in only: continue
        log(fn.__doc__.splitlines()[0])
        try: out.update(fn())
        except ImportError as e: log(f"skipped, not built yet ({e})")
    print(json.dumps(out, sort_keys=True))

if __name__ == "__main__":
    main()
