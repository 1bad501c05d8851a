"""The live path against the backtest: `futbot replay` pushes stored bars from a real `futbot sim` through LiveFeatures,
both side models, the risk rules and the live book, and must give the backtest's positions and P&L; its signals verify."""
import hashlib, hmac, json, os, subprocess
import numpy as np
import pandas as pd
import pytest
from conftest import BIN, EVEN_BETS, confident_threshold
from futbot import history as h
from futbot.config import load_config
from futbot.intervals import index_ms, to_ms
from futbot.features import synth_bars, get_bars
from futbot.backtest import BacktestConfig, prepare_symbol, run_backtest
from futbot.risk import RiskConfig
from futbot.live import LiveBook, LiveModel, compare, Correlations, batch_proba, load_feed

SYMBOLS = ("BTCUSDT", "ETHUSDT")
START, END = "2024-02-18", "2024-02-20"   # the replayed days (the sim's two months start 2024-01-01)
KEYS = {"FUTBOT_HMAC_KEYS": "k1=first-secret-0123456789,k2=second-secret-9876543210", "FUTBOT_HMAC_KEY_ID": "k2"}

def futbot(*args, env=None):
    return subprocess.run([str(BIN / "futbot"), *args], capture_output=True, text=True, env=dict(os.environ, **(env or {})))

def independent_verify(sig:dict, keys:dict)->bool:
    "The 10-line verifier of DESIGN.md: hmac, hashlib and json only"
    body = {k: v for k, v in sig.items() if k != "signature"}
    msg = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    good = hmac.new(keys[sig["key_id"]].encode(), msg, hashlib.sha256).hexdigest()
    return hmac.compare_digest(good, sig["signature"])

@pytest.fixture(scope="module")
def market(trained_market):
    "The shared market and models (conftest), and a config whose threshold they reach on a few percent of the bars"
    d, _, folders = trained_market
    thr = confident_threshold(d, folders, to_ms(START), to_ms(END), 0.96)
    (d / "replay.yaml").write_text(f"signals:\n  min_confidence: {thr:.9f}\n" + EVEN_BETS)
    return d, folders, thr

@pytest.fixture(scope="module")
def replays(market):
    "`futbot replay` of each symbol over the two days, signed: {symbol: its comparison.json}"
    d, folders, _ = market
    out = {}
    for s in SYMBOLS:
        r = futbot("replay", "--symbol", s, "--model", str(folders[s]), "--start", START, "--end", END,
                   "--data-dir", str(d / "data"), "--artifacts-dir", str(d / "art"), "--config", str(d / "replay.yaml"), env=KEYS)
        assert r.returncode == 0, r.stdout + r.stderr[-2000:]
        assert "equal: yes" in r.stdout, r.stdout
        out[s] = json.loads((d / "art" / "replays" / r.stdout.split()[-1].split("/")[-1] / "comparison.json").read_text())
    return out

def test_replay_equals_the_backtest_and_its_signals_verify(market, replays):
    "Two days, two symbols: the same positions, fills and P&L as the backtest; every signal verifies, twice over"
    d, folders, thr = market
    out = list(replays.values())
    assert sum(c["positions"] for c in out) >= 3, out               # the test must see trades to mean anything
    for c in out:
        assert c["equal"] and c["positions"] == c["backtest_positions"] and c["max_pnl_gap"] in (None, 0.0)
        assert c["pnl"] == pytest.approx(c["backtest_pnl"], abs=1e-9) and c["signals"] == c["positions"]
        f = c["signals_file"]
        assert f.endswith("signals.jsonl") and c["signed"] and not f.startswith(str(d / "data"))
        r = futbot("verify-signal", f, env={"FUTBOT_HMAC_KEYS": KEYS["FUTBOT_HMAC_KEYS"]})
        assert r.returncode == 0 and f"verified {c['signals']} of {c['signals']} signals; 0 failed" in r.stdout, r.stdout
        keys = dict(kv.split("=", 1) for kv in KEYS["FUTBOT_HMAC_KEYS"].split(","))
        sigs = [json.loads(l) for l in open(f)]
        assert all(independent_verify(s, keys) for s in sigs)
        for s in sigs:                                             # the risk rules' figures, unchanged, and the evidence
            assert s["model"]["name"].startswith("lgbm-") and s["uncertainty"]["method"].startswith("fold_spread")
            assert len(s["explanation"]["top_features"]) == 5 and thr <= s["confidence"] <= 1
            assert (s["stop_loss"] < s["entry"]["price"] < s["take_profits"][-1]["price"]) == (s["side"] == "long")

def refused(capsys, *args)->str:
    "The one line `futbot` prints for args it refuses with exit 2 (run in this process: the same code, no start-up)"
    from futbot.cli import main
    code = main(list(args))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (code, err)
    return err

def test_replay_is_reproducible_and_refuses_what_it_cannot_use(market, replays, tmp_path, capsys):
    "The same range gives the same signal ids; a missing model, missing data and a schema mismatch get one line, exit 2"
    d, folders, _ = market
    args = ["--symbol", "BTCUSDT", "--start", START, "--end", END, "--data-dir", str(d / "data"),
            "--artifacts-dir", str(d / "art"), "--config", str(d / "replay.yaml")]
    r = futbot("replay", "--model", str(folders["BTCUSDT"]), *args)            # unsigned this time
    assert r.returncode == 0, r.stderr[-2000:]
    again = [json.loads(l)["signal_id"] for l in open(d / "art" / "replays" / r.stdout.split()[-1].split("/")[-1]
                                                      / "signals.unsigned.jsonl")]
    first = [json.loads(l)["signal_id"] for l in open(replays["BTCUSDT"]["signals_file"])]
    assert again == first and len(first) > 0
    refused(capsys, "replay", "--model", "lgbm-NOSUCH", *args)
    assert "futbot download" in refused(capsys, "replay", "--model", str(folders["BTCUSDT"]), "--data-dir",
                                        str(tmp_path / "empty"), *args[2:6], "--symbol", "BTCUSDT",
                                        "--artifacts-dir", str(tmp_path / "art"))
    assert "config file not found" in refused(capsys, "replay", "--model", str(folders["BTCUSDT"]), *args[:-1],
                                              str(d / "cfg.yaml").replace("cfg", "none"))
    (d / "other.yaml").write_text("labels:\n  profit_threshold: 0.02\n")   # another bet than the model's
    assert "another bet" in refused(capsys, "replay", "--model", str(folders["BTCUSDT"]), *args[:-1], str(d / "other.yaml"))
    bad = tmp_path / "bad"                                         # a model whose features the live rows do not have
    import shutil
    shutil.copytree(folders["BTCUSDT"], bad)
    for f in [bad / "schema.json", *(bad.rglob("model.json"))]:
        j = json.loads(f.read_text())
        j["features"] = ["no_such_feature", *j["features"][1:]]
        f.write_text(json.dumps(j))
    r = futbot("replay", "--model", str(bad), *args)
    last = r.stderr.strip().splitlines()[-1]                    # after the replay's progress log lines
    assert r.returncode == 2 and last.startswith("futbot replay: error:") and "schema mismatch" in last, r.stderr
    assert "Traceback" not in r.stderr

@pytest.mark.parametrize("seed", [0, 1])
def test_live_book_equals_the_backtest_on_two_symbols(seed):
    "Random probabilities on two correlated synthetic symbols, partial take-profits, ATR barriers, funding: same book"
    b1 = synth_bars(5 * 1440, seed=seed)
    b2 = b1.copy()
    b2[["open", "high", "low", "close"]] *= 1 + np.random.default_rng(seed).normal(0, 1e-4, (len(b1), 1)).cumsum(0)
    b2["high"], b2["low"] = b2[["open", "high", "close"]].max(axis=1), b2[["open", "low", "close"]].min(axis=1)
    t = pd.date_range(b1.index[0], b1.index[-1], freq="8h")
    fund = pd.DataFrame({"funding_rate": 1e-4, "mark_price": b1["close"].reindex(t).to_numpy()}, index=t)
    cf = load_config(overrides={"signals.min_confidence": 0.6, "signals.cooldown": "10m", "risk.max_correlated_positions": 1,
                                "risk.partial_take_profits": [[0.5, 0.5]]})
    cfg = BacktestConfig(horizon="1h", up=0.004, down=0.004, barriers="atr", vol_window="1d", correlation_window="1d")
    rcfg = RiskConfig.from_config(cf)
    bars = {"BTCUSDT": b1, "ETHUSDT": b2}
    data = {s: prepare_symbol(s, {"1m": b, "5m": get_bars({"1m": b}, "5m")}, {"funding": fund}, cfg) for s, b in bars.items()}
    rng = np.random.default_rng(seed)
    proba = {s: pd.DataFrame({"p_long": rng.uniform(size=len(sd.t)), "p_short": rng.uniform(size=len(sd.t))}) for s, sd in data.items()}
    end = int(data["BTCUSDT"].t[-1]) - 2 * 3_600_000
    bt = run_backtest(data, proba, cfg, rcfg, end=end)
    lb, corr = LiveBook(cfg, rcfg), Correlations(cfg.correlation_window)
    for s in bars: lb.path(s, "1m")
    for k, tm in enumerate(data["BTCUSDT"].t[data["BTCUSDT"].t < end].tolist()):
        for s, b in bars.items():
            lb.paths[s].add_bars(b.iloc[: int(np.searchsorted(index_ms(b.index) + 60_000, tm, "right"))])   # closed by tm
            lb.paths[s].add_funding(fund[index_ms(fund.index) <= tm])
            corr.add(s, tm, data[s].price[k], 300_000)
        lb.settle(tm)
        for s in sorted(bars):
            others = {x.symbol for x in lb.open if x.symbol != s}
            lb.decide(tm, s, proba[s].p_long[k], proba[s].p_short[k], data[s].rows[k], corr=corr.at(s, others, tm) if others else None)
    for s, b in bars.items():
        lb.paths[s].add_bars(b)
        lb.paths[s].add_funding(fund)
    lb.settle(2 ** 62, final=True)
    c = compare(lb.done, bt.positions)
    assert c["equal"] and c["live"] > 20, c
    assert dict(lb.refusals) == dict(bt.refusals) and "correlation" in lb.refusals
    kinds = {f for p in lb.done for f in p.kind.tolist()}
    assert {0, 1, 2, 3}.issubset(kinds), kinds                     # entry, partial, target and stop fills all happened
    assert sum(abs(p.fund).sum() > 0 for p in lb.done) > 0          # and funding was paid on some
