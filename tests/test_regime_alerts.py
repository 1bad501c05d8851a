"""A volatility regime change in the local exchange, watched by `futbot serve`'s monitor: the shared market's
BTCUSDT model (trained on the same seed's history up to 2024-03-01) is served on a market whose volatility tripled
on 2024-03-03 (`--regime-schedule`; the history before it bit-identical). The drift alert opens within the drift
window of the change and reaches a real webhook receiver exactly once and a real SMTP server exactly once while
the condition holds pass after pass; `futbot monitor drift` over the same data says when the verdict turned."""
import json, os, shutil, signal, subprocess, time
from email import message_from_bytes
from email.policy import default as email_policy
import pandas as pd
from aiosmtpd.controller import Controller
from conftest import BIN, EVEN_BETS, wait_until as wait_for, run_sim
from test_alerts import Inbox, free_port, webhook_server
from futbot.alerts import AlertStore
from futbot.intervals import to_ms, DAY_MS

CHANGE, NOW = "2024-03-03T00:00", "2024-03-08"
ENV = {"FUTBOT_HMAC_KEYS": "k1=regime-test-secret-0123456789", "FUTBOT_HMAC_KEY_ID": "k1",
       "FUTBOT_API_TOKENS": "regime-token-abcdefghijklmnop"}
PASSES_AFTER = 4             # monitor passes (one per simulated hour) the test watches after the first notification

def test_volatility_change_alerts_once_on_each_channel(trained_market, tmp_path):
    from futbot import history as h
    d, _, models = trained_market
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctl.start()
    sim = run_sim("--alpha", "default", "--now", NOW, "--regime-schedule", f"{CHANGE}=vol:3.0", months=2, seed=4,
                  speed=1200)
    try:
        with webhook_server() as (hook, got, _), sim as url:
            h.download("BTCUSDT", h.DEFAULT_DATASETS, ["1m", "5m", "1h", "4h", "1d"], price_interval="5m", months=1,
                       exchange=url, data_dir=tmp_path / "data", progress=False)
            # the same market as the model's until the change: its last stored day (2024-02-29), identical
            day = [to_ms("2024-02-29"), to_ms("2024-03-01")]
            ours, theirs = (h.load_bars("BTCUSDT", "1m", *day, p) for p in (tmp_path / "data", d / "data"))
            pd.testing.assert_frame_equal(ours, theirs)
            shutil.copytree(d / "art", tmp_path / "art")
            cfg = tmp_path / "cfg.yaml"
            cfg.write_text(EVEN_BETS + "monitoring:\n  auto_retrain: false\n"
                           f"alerts:\n  channels: [log, webhook, email]\n  store: {tmp_path / 'alerts.db'}\n"
                           f"  smtp_host: 127.0.0.1\n  smtp_port: {ctl.port}\n  email_to: [ops@example.com]\n")
            p = subprocess.Popen([str(BIN / "futbot"), "serve", "--exchange", url, "--port", "0", "--symbol", "BTCUSDT",
                                  "--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "art"),
                                  "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, FUTBOT_LOG_DIR=str(tmp_path / "logs"),
                                          FUTBOT_ALERT_WEBHOOK_URL=hook, **ENV))
            try:
                line = p.stdout.readline()
                assert line.startswith("futbot serve: http://"), (line, p.stderr.read() if p.poll() is not None else "")
                drift = lambda: [b for b, _ in got if b["key"] == "drift:BTCUSDT"]
                first = wait_for(drift, 120)[0]
                store = AlertStore(tmp_path / "alerts.db", deliver=False)
                a = store.get(first["id"])
                wait_for(lambda: store.get(a.id).count >= 1 + PASSES_AFTER, 60)   # the condition held pass after pass
            finally:
                p.send_signal(signal.SIGTERM)
                rc = p.wait(30)
            assert rc == 0, p.stderr.read()[-3000:]
        a = store.get(a.id)
        assert to_ms(CHANGE) < a.t_ms <= to_ms(CHANGE) + 7 * DAY_MS, (a.t_ms, CHANGE)     # within the drift window
        assert a.state == "open" and a.notified == 1 and a.count >= 1 + PASSES_AFTER, a.to_dict()
        assert len(drift()) == 1, drift()                                                   # the webhook: once
        mails = [message_from_bytes(c, policy=email_policy) for _, _, c in inbox.mail]
        ours = [m for m in mails if "drift:BTCUSDT" in m.get_content()]
        assert len(ours) == 1 and "BTCUSDT" in ours[0]["Subject"], [m["Subject"] for m in mails]   # the mail: once
        assert first["severity"] in ("warning", "error") and "PSI" in first.get("message", ""), first
    finally:
        ctl.stop()
    # the same data through `futbot monitor drift`: no action-level verdict before the change, one after it
    r = subprocess.run([str(BIN / "futbot"), "monitor", "drift", "--model", str(models["BTCUSDT"]), "--data-dir",
                        str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "art"), "--config", str(cfg),
                        "--start", "2024-02-29", "--end", NOW, "--step", "12h", "--run-id", "regime", "--no-notebook"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = pd.read_csv(tmp_path / "art" / "drift" / "regime" / "series.csv", index_col=0, parse_dates=True)
    before = s[s.index <= pd.Timestamp(CHANGE, tz="UTC")]
    assert len(before) >= 6 and "act" not in set(before.feature_level), before
    assert pd.Timestamp(CHANGE, tz="UTC") < pd.Timestamp(json.loads((tmp_path / "art" / "drift" / "regime" /
                                                                      "summary.json").read_text())["first_act"])
