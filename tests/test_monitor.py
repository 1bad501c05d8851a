"""`futbot serve` with its monitor against a real `futbot sim`: an action-level alert starts a retrain whose outcome
the registry and an alert record; an approval and a rollback in the registry are served without a restart."""
import json, os, shutil, signal, subprocess, time, urllib.request
from conftest import BIN, EVEN_BETS, wait_until as wait_for
from futbot.alerts import AlertStore
from futbot.registry import Registry

TOKEN = "test-token-abcdefghijklmnop"
ENV = {"FUTBOT_HMAC_KEYS": "k1=monitor-test-secret-0123456789", "FUTBOT_HMAC_KEY_ID": "k1", "FUTBOT_API_TOKENS": TOKEN}
NAME = "lgbm-BTCUSDT"

def futbot(*args):
    return subprocess.run([str(BIN / "futbot"), *args], capture_output=True, text=True, env=dict(os.environ, **ENV))

def health(base):
    with urllib.request.urlopen(base + "/health", timeout=10) as r: return json.loads(r.read())

def events(log, name):
    return [e for e in map(json.loads, open(log)) if e.get("event") == name] if log.exists() else []

def test_retrain_then_approve_and_rollback_without_a_restart(trained_market, tmp_path):
    "Drift at the action level retrains BTCUSDT; its outcome is registered and alerted; approve and rollback are served"
    d, url, _ = trained_market
    shutil.copytree(d / "data", tmp_path / "data", ignore=shutil.ignore_patterns("signals"))   # the shared market stays as it was
    shutil.copytree(d / "art", tmp_path / "art")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(EVEN_BETS + "training:\n  walk_forward_folds: 3\n  max_features: 30\n  n_trials: 0\n  features: [\"*\", \"!flow_*_1m\", \"!px_age_*_1m\"]\n"
                   "monitoring:\n  drift_share: 0.0\n  auto_retrain: true\n  retrain_cooldown: 30d\n")  # any feature at act acts
    log = tmp_path / "logs" / "futbot.log"
    p = subprocess.Popen([str(BIN / "futbot"), "serve", "--exchange", url, "--port", "0", "--symbol", "BTCUSDT",
                          "--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "art"), "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FUTBOT_LOG_DIR=str(tmp_path / "logs"), **ENV))
    try:
        line = p.stdout.readline()
        assert line.startswith("futbot serve: http://"), (line, p.stderr.read() if p.poll() is not None else "")
        base = line.split()[2]
        assert health(base)["models"]["BTCUSDT"]["version"] == "1.0.0"
        started = wait_for(lambda: events(log, "retrain_started"), 60)
        assert started[0]["symbol"] == "BTCUSDT" and started[0]["reason"], started
        done = wait_for(lambda: events(log, "retrain_finished"), 420, 1.0)[0]
        assert done["status"] in ("promoted", "needs_approval"), done
        reg = Registry(tmp_path / "art")
        new = max(r["version"] for r in reg.versions(NAME))
        assert new != "1.0.0" and next(r for r in reg.versions(NAME) if r["version"] == new)["status"] == done["status"]
        alerts = AlertStore(tmp_path / "art" / "alerts.db", deliver=False).alerts("all")
        assert any(a.key == "retrain:BTCUSDT" and done["status"] in a.title for a in alerts), [a.key for a in alerts]
        assert len(events(log, "retrain_started")) == 1                                        # the cool-down holds
        if done["status"] != "promoted":
            r = futbot("registry", "approve", NAME, new, "--reason", "test: serve the retrained model",
                       "--artifacts-dir", str(tmp_path / "art"))
            assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: health(base)["models"]["BTCUSDT"]["version"] == new, 60)             # served, no restart
        r = futbot("registry", "rollback", NAME, "--reason", "test: back to the first model", "--artifacts-dir", str(tmp_path / "art"))
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: health(base)["models"]["BTCUSDT"]["version"] == "1.0.0", 60)
        assert [e["new"] for e in events(log, "model_swapped")] == [new, "1.0.0"]
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, p.stderr.read()[-3000:]
