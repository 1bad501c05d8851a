"""`futbot serve` against a real `futbot sim`: streamed bars through the live path give the signals `futbot replay` gives
on the same bars; a SIGKILL loses and repeats nothing; the API refuses what it must; start-up refuses what cannot work."""
import contextlib, json, os, signal, subprocess, time, urllib.error, urllib.request
import pytest
from conftest import BIN, EVEN_BETS, confident_threshold, prometheus_scraping, prometheus_query
from futbot import history as h
from futbot.intervals import to_ms, ms_to_iso
from futbot.live import LiveModel
from futbot.signals import RedisOutput

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SECRET = {"FUTBOT_HMAC_KEYS": "k1=serve-test-secret-0123456789", "FUTBOT_HMAC_KEY_ID": "k1"}
TOKEN = "test-token-abcdefghijklmnop"
ENV = dict(SECRET, FUTBOT_API_TOKENS=TOKEN)
SPEED = 1200                                                   # the shared test market's sim speed (conftest)
LIVE_S = float(os.environ.get("FUTBOT_TEST_SERVE_S", "144"))  # wall seconds of serving: 2 simulated days at SPEED

def futbot(*args, env=None, **kw):
    return subprocess.run([str(BIN / "futbot"), *args], capture_output=True, text=True, env=dict(os.environ, **(env or {})), **kw)

def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read() or b"null")

@pytest.fixture(scope="module")
def market(trained_market):
    "The shared running sim and models (conftest), and a config whose threshold they reach on a tenth of recent bars"
    d, url, folders = trained_market
    thr = confident_threshold(d, folders, to_ms("2024-02-25"), to_ms("2030-01-01"), 0.9)
    (d / "low.yaml").write_text(f"signals:\n  min_confidence: {thr:.9f}\n  cooldown: 15m\n" + EVEN_BETS
                                + "monitoring:\n  auto_retrain: false\n")      # retraining has its own test
    return d, url

def serve(d, url, env=ENV, extra=()):
    "Start `futbot serve`; returns the process and its base URL (after its first line)"
    p = subprocess.Popen([str(BIN / "futbot"), "serve", "--exchange", url, "--port", "0", "--data-dir", str(d / "data"),
                          "--artifacts-dir", str(d / "art"), "--config", str(d / "low.yaml"), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FUTBOT_LOG_DIR=str(d / "logs"), **env))
    line = p.stdout.readline()
    assert line.startswith("futbot serve: http://"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, line.split()[2]

def ws_listen(url):
    "Collect what /ws/signals pushes (token in the bearer subprotocol) until the service closes it"
    import threading
    from websockets.sync.client import connect
    got = []
    def run():
        try:
            with connect(url, subprotocols=["bearer", TOKEN], open_timeout=10) as ws:
                for msg in ws: got.append(json.loads(msg))
        except Exception as e: got.append({"error": repr(e)})
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return got, th

def signals_of(d):
    return [json.loads(l) for l in open(d / "data" / "signals" / "signals.jsonl") if l.strip()]

def test_serve_equals_replay_through_a_sigkill(market, redis_server):
    "Two simulated days live, SIGKILLed and restarted midway: every signal verifies, none repeats, each reaches Redis once, all equal the replay's"
    d, url = market
    feats = {f for s in SYMBOLS for f in LiveModel.load(d / "art" / "models" / f"lgbm-{s}" / "1.0.0").features}
    assert any(f.startswith(("basis", "oi", "mark_")) for f in feats), sorted(feats)  # extras served live
    env = dict(ENV, FUTBOT_REDIS_URL=redis_server.url, FUTBOT_REDIS_STREAM="test:serve")
    p, base = serve(d, url, env)
    try:
        assert get(base + "/signals")[0] == 401 and get(base + "/signals", "wrong-token-0123456789")[0] == 401
        code, body = get(base + "/signals?since=yesterday", TOKEN)
        assert code == 400 and "since" in body["error"]
        code, hl = get(base + "/health")
        assert code == 200 and set(hl["models"]) == set(SYMBOLS)
        time.sleep(LIVE_S / 2)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    n_before = len(signals_of(d)) if (d / "data" / "signals" / "signals.jsonl").exists() else 0
    p, base = serve(d, url, env)
    pushed, ws_thread = ws_listen(base.replace("http://", "ws://") + "/ws/signals")
    prom = prometheus_scraping(base[7:])
    try:
        prom_url = prom.__enter__()
        good = (d / "low.yaml").read_text()
        (d / "low.yaml").write_text(good.replace("min_confidence:", "min_confidence: 3 #"))   # fails validation
        p.send_signal(signal.SIGHUP)
        time.sleep(LIVE_S / 4)
        (d / "low.yaml").write_text(good)
        p.send_signal(signal.SIGHUP)
        time.sleep(LIVE_S / 4)
        events = [json.loads(l).get("event") for l in open(d / "logs" / "futbot.log")]
        assert "reload_refused" in events and events.index("reload_refused") < len(events) - events[::-1].index("reloaded")
        code, hl = get(base + "/health")
        assert code == 200 and hl["status"] == "live" and hl["last_decision"], hl
        assert {k.split(":")[0] for k in hl["extras_published"]} == set(SYMBOLS) and all(hl["extras_published"].values()), hl
        assert hl["monitor"]["last_check"] and set(hl["monitor"]["symbols"]) == set(SYMBOLS), hl["monitor"]   # futbot.monitor
        assert all(v["drift"] in ("ok", "warn", "act") for v in hl["monitor"]["symbols"].values()), hl["monitor"]
        assert hl["system"]["rss_mb"] > 0 and hl["alerts"]["pending"] >= 0, hl
        code, page = get(base + "/signals?since=0&limit=1000", TOKEN)
        assert code == 200
        with urllib.request.urlopen(base + "/metrics", timeout=10) as r: metrics = r.read().decode()
        assert "futbot_signal_latency_seconds_bucket" in metrics and "futbot_decisions_total" in metrics
        assert "futbot_drift_psi_max{" in metrics and "futbot_disk_free_bytes" in metrics
        for _ in range(40):                                    # Prometheus scrapes the service and answers queries
            dec = prometheus_query(prom_url, "sum(futbot_decisions_total)")
            if dec and float(dec[0]["value"][1]) > 0: break
            time.sleep(0.25)
        assert dec and float(dec[0]["value"][1]) > 0, dec
        hist = prometheus_query(prom_url, 'futbot_signal_latency_seconds_bucket{le="+Inf"}')
        assert len(hist) == 1 and prometheus_query(prom_url, 'up{job="futbot"}')[0]["value"][1] == "1"
        info = prometheus_query(prom_url, "futbot_model_info")
        assert sorted(x["metric"]["symbol"] for x in info) == sorted(SYMBOLS)
    finally:
        with contextlib.suppress(Exception): prom.__exit__(None, None, None)
        p.send_signal(signal.SIGTERM)
        t0 = time.time()
        assert p.wait(15) == 0, p.stderr.read()[-3000:]
        assert time.time() - t0 < 10
    ws_thread.join(15)
    sigs = signals_of(d)
    ids = [s["signal_id"] for s in sigs]
    assert [m["signal_id"] for m in pushed if "signal_id" in m] == [i for i in ids if i in {m.get("signal_id") for m in pushed}]
    assert all(m in sigs for m in pushed), "a WebSocket message that is not the logged signal"
    assert len(ids) == len(set(ids)) and len(sigs) >= n_before
    assert [s["signal_id"] for s in page["signals"]] == ids[-len(page["signals"]):] if page["signals"] else True
    r = futbot("verify-signal", str(d / "data" / "signals" / "signals.jsonl"), env=SECRET)
    assert r.returncode == 0, r.stdout
    rd = RedisOutput(redis_server.url, stream="test:serve")      # a consumer group reads each signal once, in order
    rd.ensure_group("consumers")
    got = []
    while part := rd.read_group("consumers", "c1", count=50):
        rd.ack("consumers", *[eid for eid, _ in part])
        got += [sig["signal_id"] for _, sig in part]
    rd.close()
    assert got == ids, (got, ids)
    # the replay of the same bars: bring the store up to date by REST, replay from the service's origin
    origin = json.loads((d / "data" / "signals" / "origin.json").read_text())["origin_ms"]
    last = hl["last_decision"]
    assert to_ms(last) - origin >= 0.9 * LIVE_S * SPEED * 1000, (ms_to_iso(origin), last)   # the span served, simulated
    for s in SYMBOLS:
        h.download(s, h.DEFAULT_DATASETS, ["1m", "5m", "1h", "4h", "1d"], price_interval="5m", months=2, exchange=url,
                   data_dir=d / "data", progress=False)
    out = {}
    for s in SYMBOLS:
        r = futbot("replay", "--symbol", s, "--model", f"lgbm-{s}", "--start", ms_to_iso(origin), "--end",
                   ms_to_iso(to_ms(last) + 60_000), "--data-dir", str(d / "data"), "--artifacts-dir", str(d / "art"),
                   "--config", str(d / "low.yaml"))
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        f = d / "art" / "replays" / r.stdout.split()[-1].split("/")[-1] / "signals.unsigned.jsonl"
        out[s] = [json.loads(l) for l in open(f)]
    assert sum(map(len, out.values())) >= 2, out           # the comparison must see signals to mean anything
    live = {s["signal_id"]: s for s in sigs if to_ms(s["timestamp"]) <= to_ms(last)}
    rep = {s["signal_id"]: s for v in out.values() for s in v}
    assert set(live) == set(rep), (sorted(live), sorted(rep))
    for k, s in rep.items():
        a = live[k]
        for f in ("timestamp", "symbol", "side", "leverage", "entry", "stop_loss", "take_profits", "position_size_pct"):
            assert a[f] == pytest.approx(s[f], rel=1e-9) if isinstance(s[f], float) else a[f] == s[f], f
        assert abs(a["confidence"] - s["confidence"]) <= 1e-9

def test_start_up_refuses_what_cannot_work(market, tmp_path):
    "No signing key, no API tokens, a model whose bet differs from the config: one line each, exit 2"
    d, url = market
    args = ["serve", "--exchange", url, "--port", "0", "--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(d / "art"),
            "--config", str(d / "low.yaml")]
    env = {k: "" for k in ENV}
    for drop, word in (("FUTBOT_HMAC_KEYS", "FUTBOT_HMAC_KEYS"), ("FUTBOT_API_TOKENS", "FUTBOT_API_TOKENS")):
        r = futbot(*args, env={**ENV, drop: ""}, timeout=60)
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    (tmp_path / "other.yaml").write_text("labels:\n  profit_threshold: 0.02\n")
    r = futbot(*args[:-1], str(tmp_path / "other.yaml"), env=ENV, timeout=60)
    assert r.returncode == 2 and "another bet" in r.stderr and "Traceback" not in r.stderr, r.stderr
