"""The soak of issue 13 (`make soak`; JSON figures on stdout, progress on stderr): `futbot serve` on two symbols for
SOAK_DAYS simulated days at SOAK_SPEED simulated seconds per wall second, while the local exchange's fault switches are
thrown on a schedule (WebSocket disconnects, a stall, a burst of 5xx answers, malformed messages) and the exchange itself
is stopped and restarted once, where its clock stopped (`futbot sim --now`).

The market and models are `live_bench.trained_market`'s. The exchange's rate-limit windows are scaled with the speed
(Binance's limits are per minute, or per 5 minutes for /futures/data, of real time; at N x the service polls N times as
often per wall second, so a window is 60 / N wall seconds here, and still 2400 weight and 1000 statistics requests).

Figures:
- decided_share: per symbol, base closes the service decided on (a signal, or none with its reason) over the base closes
  from its origin to its last decision; the brief's bar is 0.995. `reasons`: the decisions without a signal, by reason.
- health_ok_share, health_max_s: `/health` polled every wall second throughout: answered with 200, slowest answer.
- rss_day1_mb, rss_last_mb, rss_growth_pct: the service's resident memory at the end of the first simulated day and at
  the end (target: growth under 10%).
- signals, replay_signals, replay_common: the signals served, the signals `futbot replay` gives on the same stored bars
  afterwards (origin to last decision), and how many of them the service emitted with the same id.
- signal_latency_p50_ms, signal_latency_p99_ms over the soak, faults included."""
import json, os, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, log
from live_bench import SYMBOLS, trained_market, start_serve, latencies

SPEED = float(os.environ.get("FUTBOT_SOAK_SPEED", "1200"))   # 2400x outruns 2 cores (the sim and the service share them)
DAYS = float(os.environ.get("FUTBOT_SOAK_DAYS", "7"))
DAY_MS, STEP_MS = 86_400_000, 300_000
SCHEDULE = [(0.5, "disconnect", {"ws_drop_all": True}), (1.5, "stall", {"ws_stall_s": 3}),
            (2.5, "5xx burst", {"http_5xx": 30}), (3.5, "malformed", {"ws_malformed": 5}),
            (4.5, "exchange restart", None), (5.5, "disconnect", {"ws_drop_all": True})]   # (simulated day, what, switches)

def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def start_sim(port:int, now:str|None=None):
    "`futbot sim` on `port` (seed 4, two months), from `now` when given; (process, url)"
    cmd = [str(BIN / "futbot"), "sim", "--port", str(port), "--months", "2", "--seed", "4", "--speed", str(SPEED),
           "--rate-window-s", f"{60 / SPEED:g}", "--funding-window-s", f"{300 / SPEED:g}", *(["--now", now] if now else [])]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip()
    if not url.startswith("http"): raise RuntimeError("futbot sim did not start")
    return p, url

def stop(p, sig=signal.SIGTERM)->float:
    "Signal `p`, wait up to 20 s (then kill); the seconds it took to exit"
    import psutil
    t = time.perf_counter()
    p.send_signal(sig)
    try: p.wait(20)
    except (subprocess.TimeoutExpired, psutil.TimeoutExpired): p.kill()
    return time.perf_counter() - t

def get_json(url:str, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read())

def post_json(url:str, body:dict):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r: return json.loads(r.read())

def sim_now(url:str)->int: return int(get_json(url + "/fapi/v1/time")["serverTime"])

def poll_health(base:str, stats:dict, done:threading.Event):
    "GET /health every wall second until `done`: counts and the slowest answer"
    while not done.is_set():
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as r: ok = r.status == 200
        except OSError: ok = False
        stats["ok" if ok else "failed"] += 1
        stats["max_s"] = max(stats["max_s"], time.perf_counter() - t)
        done.wait(1.0)

def metric_sums(text:str, name:str, by:str)->dict:
    "label value -> summed sample of the Prometheus metric `name` (e.g. futbot_decisions_total by symbol)"
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(kv.split("=", 1) for kv in line[len(name) + 1:line.index("}")].split(","))
            k = labels[by].strip('"')
            out[k] = out.get(k, 0) + float(line.rsplit(" ", 1)[1])
    return out

def soak(d:Path)->dict:
    port = free_port()
    simp, url = start_sim(port)
    try:
        trained_market(d, url)
        log(f"soak: market ready; serving {DAYS:g} simulated days at {SPEED:g}x")
        p, base = start_serve(d, url)
        hs, done = {"ok": 0, "failed": 0, "max_s": 0.0}, threading.Event()
        th = threading.Thread(target=poll_health, args=(base, hs, done), daemon=True)
        th.start()
        t0, rss, thrown, todo = sim_now(url), {}, [], list(SCHEDULE)
        while True:
            time.sleep(0.5)
            try: day = (sim_now(url) - t0) / DAY_MS
            except OSError: continue
            k = int(day)
            if k >= 1 and k not in rss:
                rss[k] = p.memory_info().rss / 2**20
                log(f"soak: simulated day {k}: rss {rss[k]:.0f} MB, health {hs}")
            if todo and day >= todo[0][0]:
                at, what, sw = todo.pop(0)
                if sw is None:                                 # the exchange stops; a new one goes on from its clock
                    now = sim_now(url)
                    stop(simp)
                    time.sleep(2.0)
                    simp, url = start_sim(port, now=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1000)))
                else: post_json(url + "/_sim/faults", sw)
                thrown.append(f"day {at:g}: {what}")
                log(f"soak: {what} at simulated day {day:.2f}")
            if day >= DAYS: break
        rss_last = p.memory_info().rss / 2**20
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r: metrics = r.read().decode()
        last = get_json(base + "/health")["last_decision"]
        done.set()
        stop_s = stop(p)
        th.join(5)
        origin = json.loads((d / "data" / "signals" / "origin.json").read_text())["origin_ms"]
        return dict(url=url, origin=origin, last=last, metrics=metrics, rss=rss, rss_last=rss_last, health=hs,
                    thrown=thrown, stop_s=stop_s, exit_code=p.returncode)
    finally:
        stop(simp)

def replay_same(d:Path, url:str, origin:int, last_ms:int)->list:
    "Signal ids `futbot replay` gives on the stored bars of the served range"
    from futbot import history as h
    from futbot.intervals import ms_to_iso
    for s in SYMBOLS:
        h.download(s, h.DEFAULT_DATASETS, ["1m", "5m", "1h", "4h", "1d"], price_interval="5m", months=2, exchange=url,
                   data_dir=d / "data", progress=False)
    ids = []
    for s in SYMBOLS:
        r = subprocess.run([str(BIN / "futbot"), "replay", "--symbol", s, "--model", f"lgbm-{s}", "--start",
                            ms_to_iso(origin), "--end", ms_to_iso(last_ms + 60_000), "--data-dir", str(d / "data"),
                            "--artifacts-dir", str(d / "art"), "--config", str(d / "low.yaml")],
                           capture_output=True, text=True)
        if r.returncode != 0: raise RuntimeError(f"futbot replay failed: {r.stderr[-500:]}")
        f = d / "art" / "replays" / r.stdout.split()[-1].split("/")[-1] / "signals.unsigned.jsonl"
        ids += [json.loads(l)["signal_id"] for l in open(f)]
    return ids

def main()->int:
    from futbot.intervals import to_ms
    keep = os.environ.get("FUTBOT_SOAK_DIR")           # keep the data, artifacts and logs there
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(keep or tmp)
        r = soak(d)
        last = to_ms(r["last"])
        dec = metric_sums(r["metrics"], "futbot_decisions_total", "symbol")
        reasons = metric_sums(r["metrics"], "futbot_signals_suppressed_total", "reason")
        want = (last - r["origin"]) // STEP_MS + 1
        sigs = [json.loads(l) for l in open(d / "data" / "signals" / "signals.jsonl") if l.strip()]
        served = {s["signal_id"] for s in sigs if to_ms(s["timestamp"]) <= last}
        simp, url = start_sim(free_port(), now=r["last"])        # the same market, for the replay's REST top-up
        try: rep = replay_same(d, url, r["origin"], last)
        finally: stop(simp)
        lat = latencies(d)
        fail_dec = metric_sums("\n".join(l for l in r["metrics"].splitlines() if 'reason="decision_failed"' in l),
                               "futbot_signals_suppressed_total", "symbol")
        out = dict(speed=SPEED, days=DAYS, base_closes=int(want),
                   decided_share={s: round((dec.get(s, 0) + fail_dec.get(s, 0)) / want, 5) for s in SYMBOLS},
                   reasons=reasons, faults=r["thrown"],
                   health_ok_share=round(r["health"]["ok"] / max(1, r["health"]["ok"] + r["health"]["failed"]), 5),
                   health_polls=r["health"]["ok"] + r["health"]["failed"], health_max_s=round(r["health"]["max_s"], 3),
                   rss_day1_mb=round(r["rss"].get(1, float("nan"))), rss_last_mb=round(r["rss_last"]),
                   rss_growth_pct=round(100 * (r["rss_last"] / r["rss"][1] - 1), 2) if 1 in r["rss"] else None,
                   sigterm_exit_s=round(r["stop_s"], 2), sigterm_exit_code=r["exit_code"], signals=len(served), replay_signals=len(rep), replay_common=len(served & set(rep)),
                   signal_latency_p50_ms=round(float(np.percentile(lat, 50)), 2) if lat else None,
                   signal_latency_p99_ms=round(float(np.percentile(lat, 99)), 2) if lat else None)
        print(json.dumps(out, indent=1))
    return 0

if __name__ == "__main__": sys.exit(main())
