"""Alerts (issue 14): the webhook and the mail reach real local servers exactly once, retries after 5xx, rate limits
hold a flapping condition, deduplication, a notification survives a SIGKILL, and `futbot monitor alerts` in a
subprocess. No mocks: an http.server and an aiosmtpd server on 127.0.0.1."""
import contextlib, http.server, json, logging, os, signal, socket, sqlite3, subprocess, sys, textwrap, threading, time
from email import message_from_bytes
from email.policy import default as email_policy
import pytest
from aiosmtpd.controller import Controller
from futbot.alerts import AlertStore, AlertConfig, WEBHOOK_ENV
from futbot.intervals import HOUR_MS, MINUTE_MS
from conftest import BIN, ROOT

def free_port()->int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

@contextlib.contextmanager
def webhook_server(fail:int=0, port:int=0):
    "A local webhook receiver: answers 500 to its first `fail` POSTs, records the bodies it accepts"
    got, state = [], {"fail": fail, "posts": 0}
    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["posts"] += 1
            ok = state["fail"] <= 0
            state["fail"] -= 1
            if ok: got.append((body, dict(self.headers)))
            self.send_response(200 if ok else 500)
            self.end_headers()
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f"http://127.0.0.1:{srv.server_port}/hook", got, state
    finally:
        srv.shutdown()
        srv.server_close()

def store(tmp_path, name="alerts.db", env=None, **cfg):
    cfg.setdefault("backoff_s", 0.05)
    return AlertStore(tmp_path / name, AlertConfig(**cfg), env=env or {})

def test_webhook_retried_after_500_then_delivered_once(tmp_path):
    with webhook_server(fail=2) as (url, got, state):
        s = store(tmp_path, channels=("webhook",), env={WEBHOOK_ENV: url}, min_interval_ms=0)
        a = s.raise_alert("drift:BTCUSDT:rsi_14", "warning", "drift", "rsi_14 drifted", "PSI 0.17", {"psi": 0.17})
        b = s.raise_alert("data:ETHUSDT:stale", "critical", "data", "ETHUSDT stale")
        assert s.flush(20)
        assert sorted(body["key"] for body, _ in got) == ["data:ETHUSDT:stale", "drift:BTCUSDT:rsi_14"]
        assert state["posts"] == 4                          # two 500s, then one success per alert
        body, headers = next(g for g in got if g[0]["id"] == a.id)
        assert body["details"] == {"psi": 0.17} and body["title"] == "rsi_14 drifted" and body["severity"] == "warning"
        assert headers["Idempotency-Key"] == f"futbot-{body['notification_id']}-webhook"
        assert [r[2] for r in s.deliveries()] == ["delivered", "delivered"] and sum(r[3] for r in s.deliveries()) == 4
        tries = s.q("SELECT ok, outcome FROM attempts ORDER BY id")
        assert [t for t in tries if not t[0]] == [(0, "HTTP 500"), (0, "HTTP 500")] and sum(t[0] for t in tries) == 2
        time.sleep(0.3)
        assert len(got) == 2 and b.notified == 1            # nothing sent twice
        s.close()

def test_webhook_final_failure_is_recorded_not_raised(tmp_path):
    s = store(tmp_path, channels=("webhook",), env={WEBHOOK_ENV: f"http://127.0.0.1:{free_port()}/x"}, retries=2,
              backoff_s=0.01)
    s.raise_alert("system:test", "error", "system", "nobody listens")
    assert s.flush(20)
    assert [r[2:4] for r in s.deliveries()] == [("failed", 3)]
    assert all(not ok for (ok,) in s.q("SELECT ok FROM attempts"))
    s.close()

class Inbox:
    "aiosmtpd handler keeping every message it is sent"
    def __init__(self): self.mail = []
    async def handle_DATA(self, server, session, envelope):
        self.mail.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

def test_email_reaches_smtp_server_once(tmp_path):
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    try:
        s = store(tmp_path, channels=("email",), smtp_host="127.0.0.1", smtp_port=ctl.port,
                  email_from="futbot@example.com", email_to=("ops@example.com", "ana@example.com"))
        a = s.raise_alert("performance:BTCUSDT:sharpe", "critical", "performance", "BTCUSDT live Sharpe 0.3 vs 1.4",
                          "bootstrap p=0.01", {"live": 0.3, "backtest": 1.4})
        for _ in range(5): s.raise_alert(a.key, "critical", "performance", a.title)     # open: counted, not mailed
        assert s.flush(20)
        time.sleep(0.2)
        assert len(inbox.mail) == 1
        frm, to, content = inbox.mail[0]
        msg = message_from_bytes(content, policy=email_policy)
        assert frm == "futbot@example.com" and sorted(to) == ["ana@example.com", "ops@example.com"]
        assert "BTCUSDT live Sharpe 0.3 vs 1.4" in msg["Subject"] and "critical" in msg["Subject"]
        assert "performance:BTCUSDT:sharpe" in msg.get_content()
        assert s.get(a.id).count == 6
        s.close()
    finally: ctl.stop()

class Clock:
    def __init__(self, ms=1_709_294_400_000): self.ms = ms
    def __call__(self): return self.ms

def test_flapping_condition_stays_within_the_rate_limits(tmp_path):
    clk, keys, hours, step = Clock(), ("risk:BTCUSDT:dd", "data:ETHUSDT:stale", "system:ws"), 2, 10_000
    limits = dict(min_interval_ms=15 * MINUTE_MS, max_per_hour=5)
    with webhook_server() as (url, got, _):
        s = AlertStore(tmp_path / "a.db", AlertConfig(channels=("webhook",), backoff_s=0.05, **limits),
                       env={WEBHOOK_ENV: url}, clock=clk)
        t0 = clk.ms
        for i in range(hours * HOUR_MS // step):          # true, false, true ... every 10 s on each key
            for k in keys: s.check(k, i % 2 == 0, "error", "risk", k, t_ms=clk.ms)
            clk.ms += step
        assert s.flush(20)
        time.sleep(0.2)
    sent = s.q("SELECT key, wall_ms FROM notifications ORDER BY wall_ms")
    assert len(got) == len(sent)                          # each notification reached the webhook once
    assert 0 < len(sent) <= limits["max_per_hour"] * hours
    for _, t in sent:                                     # any sliding hour holds at most max_per_hour
        assert sum(t - HOUR_MS < u <= t for _, u in sent) <= limits["max_per_hour"]
    for k in keys:                                        # per key at least min_interval apart
        ts = [t for kk, t in sent if kk == k]
        assert all(b - a >= limits["min_interval_ms"] for a, b in zip(ts, ts[1:]))
    opened, notified, held = s.q("SELECT COUNT(*), SUM(notified), SUM(suppressed) FROM alerts")[0]
    assert opened == len(keys) * hours * HOUR_MS // step // 2        # each true after a false opens a new alert
    assert notified == len(sent) and held == opened - notified       # the rest is counted as suppressed
    assert clk.ms - t0 == hours * HOUR_MS
    s.close()

def test_same_open_key_100_times_is_one_alert_one_notification_per_channel(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="futbot.alerts")
    with webhook_server() as (url, got, _):
        s = store(tmp_path, channels=("log", "console", "webhook"), env={WEBHOOK_ENV: url})
        for i in range(100): a = s.raise_alert("drift:ETHUSDT:psi", "warning", "drift", "ETHUSDT PSI", details={"i": i})
        assert s.flush(20)
        time.sleep(0.2)
        assert len(got) == 1
    assert s.q("SELECT COUNT(*), MAX(count) FROM alerts")[0] == (1, 100)
    assert (a.count, a.details, a.notified, a.suppressed) == (100, {"i": 99}, 1, 0)
    assert sorted(r[1] for r in s.deliveries()) == ["console", "log", "webhook"]
    assert all(r[2] == "delivered" for r in s.deliveries())
    assert [l for l in capsys.readouterr().err.splitlines() if "futbot alert #" in l] == \
           [f"futbot alert #{a.id} WARNING drift drift:ETHUSDT:psi: ETHUSDT PSI (at {got[0][0]['t']})"]
    assert len([r for r in caplog.records if r.getMessage() == "alert"]) == 1
    s.close()

CRASH = textwrap.dedent("""
    import sys, time
    from futbot.alerts import AlertStore, AlertConfig
    s = AlertStore(sys.argv[1], AlertConfig(channels=("webhook",), retries=50, backoff_s=0.2))
    a = s.raise_alert("system:BTCUSDT:ws", "critical", "system", "websocket down for 60 s")
    print(a.id, flush=True)
    time.sleep(120)
""")

def test_notification_survives_sigkill_and_is_delivered_once_on_next_start(tmp_path):
    port, db = free_port(), tmp_path / "alerts.db"
    env = {**os.environ, WEBHOOK_ENV: f"http://127.0.0.1:{port}/hook", "FUTBOT_LOG_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", CRASH, str(db)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        aid = int(p.stdout.readline())
        end = time.time() + 20
        while time.time() < end:                           # the dead process tried (connection refused) at least once
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as c:
                if c.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] >= 1: break
            time.sleep(0.05)
        else: pytest.fail("the first process never tried its webhook")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    with webhook_server(port=port) as (url, got, _):
        s = AlertStore(db, AlertConfig(channels=("webhook",), backoff_s=0.05), env={WEBHOOK_ENV: url})
        assert s.flush(20)
        time.sleep(0.3)
        s.close()
        again = AlertStore(db, AlertConfig(channels=("webhook",), backoff_s=0.05), env={WEBHOOK_ENV: url})
        assert again.flush(5)
        time.sleep(0.3)
        assert [(b["id"], b["key"]) for b, _ in got] == [(aid, "system:BTCUSDT:ws")]
        d = again.deliveries()
        assert [r[2] for r in d] == ["delivered"] and d[0][3] >= 2       # failed tries before the kill, one success
        again.close()

def cli(*args, env=None):
    e = {**os.environ, "FUTBOT_LOG_DIR": env["log"]} if env else dict(os.environ)
    return subprocess.run([str(BIN / "futbot"), "monitor", "alerts", *args], capture_output=True, text=True, cwd=ROOT,
                          env=e, timeout=60)

def one_line_exit_2(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    return lines[0]

def test_cli_list_ack_resolve(tmp_path):
    db, env = tmp_path / "alerts.db", {"log": str(tmp_path / "logs")}
    r = cli("list", "--store", str(db), env=env)
    assert r.returncode == 0 and "no alerts in" in r.stdout and not db.exists()
    svc = store(tmp_path, channels=("log",))                 # the service's store stays open, delivering, meanwhile
    a = svc.raise_alert("drift:BTCUSDT:rsi_14", "warning", "drift", "rsi_14 drifted")
    b = svc.raise_alert("data:ETHUSDT:stale", "critical", "data", "ETHUSDT stale")
    r = cli("list", "--store", str(db), env=env)
    assert r.returncode == 0, r.stderr
    assert "drift:BTCUSDT:rsi_14" in r.stdout and "data:ETHUSDT:stale" in r.stdout and "2 alerts (open)" in r.stdout
    r = cli("ack", str(a.id), "--reason", "retrain tonight", "--who", "ana", "--store", str(db), env=env)
    assert r.returncode == 0 and "acked by ana" in r.stdout, r.stderr
    assert svc.get(a.id).ack_reason == "retrain tonight"
    assert cli("resolve", str(b.id), "--store", str(db), env=env).returncode == 0
    every = cli("list", "--state", "all", "--json", "--store", str(db), env=env)
    rows = [json.loads(l) for l in every.stdout.splitlines()]
    assert [(x["id"], x["state"]) for x in rows] == [(b.id, "resolved"), (a.id, "acked")]
    one = cli("list", "--state", "all", "--json", "--limit", "1", "--store", str(db), env=env)
    assert [json.loads(l)["id"] for l in one.stdout.splitlines()] == [b.id]
    assert "no open alerts" in cli("list", "--store", str(db), env=env).stdout
    assert svc.raise_alert(b.key, "critical", "data", "ETHUSDT stale again").id not in (a.id, b.id)
    assert "no alert 999" in one_line_exit_2(cli("ack", "999", "--reason", "x", "--store", str(db), env=env))
    assert "resolved already" in one_line_exit_2(cli("resolve", str(b.id), "--store", str(db), env=env))
    assert "invalid choice" in one_line_exit_2(cli("list", "--state", "closed", "--store", str(db), env=env))
    assert "not a whole number" in one_line_exit_2(cli("resolve", "abc", "--store", str(db), env=env))
    assert "--reason" in one_line_exit_2(cli("ack", str(a.id), "--store", str(db), env=env))
    svc.close()

def test_cli_default_store_is_under_artifacts_dir(tmp_path):
    s = AlertStore(tmp_path / "art" / "alerts.db", AlertConfig(channels=()), deliver=False)
    s.raise_alert("risk:portfolio:drawdown", "error", "risk", "drawdown 18% of 20%")
    s.close()
    r = subprocess.run([str(BIN / "futbot"), "monitor", "--artifacts-dir", str(tmp_path / "art"), "alerts", "list"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "FUTBOT_LOG_DIR": str(tmp_path)})
    assert r.returncode == 0 and "risk:portfolio:drawdown" in r.stdout, r.stderr
