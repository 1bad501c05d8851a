"""`futbot backtest` on stored bars: the run folder, the report, and one clear line for every bad input."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from futbot.backtest import TRADE_COLUMNS
from futbot.dataset import store_bars
from futbot.features import synth_bars

FUTBOT = [str(Path(sys.executable).parent / "futbot")]
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("bt")
    store_bars(synth_bars(60 * 24 * 16, seed=3, vol=0.0012, start="2024-03-01"), "BTCUSDT", "1m", d / "data")
    return d

def inproc(capsys, monkeypatch, cwd, *args):
    "futbot.cli.main in this process (same code as the console script; measured by coverage)"
    from futbot.cli import main
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FUTBOT_HOME", str(ROOT))
    monkeypatch.setenv("FUTBOT_LOG_DIR", str(Path(cwd) / "logs"))
    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)

def futbot(*args, cwd):
    env = {**os.environ, "FUTBOT_HOME": str(ROOT), "FUTBOT_LOG_DIR": str(Path(cwd) / "logs")}
    return subprocess.run(FUTBOT + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

def _proba(store, f=lambda p: p, name="p.parquet"):
    t = pd.date_range("2024-03-05 00:05", "2024-03-12", freq="5min", tz="UTC")
    u = np.random.default_rng(0).random(len(t))
    p = f(pd.DataFrame({"p_long": u, "p_short": 1 - u}, index=t))
    p.to_parquet(store / name)
    return store / name

def test_proba_run_writes_the_contract_and_a_report(store):
    r = futbot("backtest", "--symbol", "BTCUSDT", "--proba", str(_proba(store)), "--start", "2024-03-05",
               "--end", "2024-03-12", "--trials", "3", cwd=store)
    assert r.returncode == 0, r.stderr
    out = store / r.stdout.strip().splitlines()[-1]
    assert out.parent == store / "artifacts" / "backtests"
    tr = pd.read_csv(out / "trades.csv")
    assert list(tr.columns[:len(TRADE_COLUMNS)]) == TRADE_COLUMNS and len(tr) > 20
    assert tr["decision_time"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").all()
    assert (pd.to_datetime(tr["entry_time"]) > pd.to_datetime(tr["decision_time"])).all()
    assert set(tr["exit_reason"]) <= {"target", "stop", "horizon", "liquidation", "end_of_data"}
    eq = pd.read_csv(out / "equity.csv")
    assert list(eq.columns) == ["time", "equity"]
    s = json.loads((out / "summary.json").read_text())
    assert s["trades"] == len(tr) and s["n_trials"] == 3 and s["source"] == "proba"
    assert s["final_equity"] == pytest.approx(10_000 + tr["pnl"].sum(), abs=1e-6)
    assert s["final_equity"] == pytest.approx(eq["equity"].iloc[-1], abs=1e-6)
    assert s["fees"] == pytest.approx(tr["fees"].sum()) and s["accounting_gap"] < 1e-6
    for k in ("sharpe", "sortino", "calmar", "max_drawdown", "var", "es", "psr", "dsr", "alpha", "beta", "win_rate",
              "profit_factor", "expectancy_r", "turnover", "exposure", "precision", "refusals", "periods_per_year"):
        assert k in s, k
    for f in ("report.html", "report.pdf", "report.ipynb"):
        assert (out / f).stat().st_size > 10_000, f
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert "Equity and drawdown" in (out / "report.html").read_text()

@pytest.mark.parametrize("args,needle", [
    (["--coin-flip", "--start", "2025-01-01", "--end", "2025-02-01"], "futbot download --symbol BTCUSDT"),
    (["--coin-flip", "--symbol", "ETHUSDT"], "futbot download --symbol ETHUSDT"),
    (["--oracle"], "--oracle needs data downloaded from the local exchange"),
    (["--model", "lgbm-BTCUSDT"], "--model needs futbot train"),
    (["--proba", "nope.parquet"], "no such file"),
    (["--coin-flip", "--trials", "0"], "--trials must be at least 1"),
    (["--coin-flip", "--start", "2024-03-10", "--end", "2024-03-05"], "is not after"),
])
def test_bad_input_one_line_exit_2(store, args, needle, capsys, monkeypatch):
    args = args if "--symbol" in args else ["--symbol", "BTCUSDT", *args]
    r = inproc(capsys, monkeypatch, store, "backtest", "--no-report", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if not l.startswith("{")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr

@pytest.mark.parametrize("make,needle", [
    (lambda p: p * 1.5, "outside [0, 1]"),
    (lambda p: p.set_axis(p.index + pd.Timedelta("1min")), "not 5m bar closes"),
    (lambda p: p.rename(columns={"p_short": "short"}), "no column p_short"),
    (lambda p: p.reset_index(drop=True), "indexed by UTC decision time"),
])
def test_bad_probabilities(store, make, needle, capsys, monkeypatch):
    f = _proba(store, make, "bad.parquet")
    r = inproc(capsys, monkeypatch, store, "backtest", "--no-report", "--symbol", "BTCUSDT", "--proba", str(f))
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_impossible_stops_refused(store):
    "Through the console script: exit code 2 and one line"
    (store / "bad.yaml").write_text("risk:\n  min_stop_distance: 0.06\n  max_stop_distance: 0.05\n")
    r = futbot("backtest", "--no-report", "--symbol", "BTCUSDT", "--coin-flip", "--config", "bad.yaml", cwd=store)
    assert r.returncode == 2 and "stop" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_in_process_run_and_figures(store, capsys, monkeypatch):
    "A coin-flip run without the report, then every report figure and the PDF drawn in this process"
    from futbot import backtest as bt
    r = inproc(capsys, monkeypatch, store, "backtest", "--symbol", "BTCUSDT", "--coin-flip", "--seed", "5", "--no-report",
               "--start", "2024-03-05", "--end", "2024-03-12", "--run-id", "cf5")
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith("cf5"), r.stderr
    tr, eq, px, s = bt.read_run(store / "artifacts" / "backtests" / "cf5")
    assert s["source"] == "coin-flip" and s["seed"] == 5 and len(tr) == s["trades"] > 0
    figs = [bt.figure_equity(eq, px["BTCUSDT"]), bt.figure_returns(eq), bt.figure_trades(tr, px["BTCUSDT"], "BTCUSDT"),
            bt.figure_costs(s)]
    pdf = bt.write_pdf(store / "artifacts" / "backtests" / "cf5", figs, s)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 20_000
