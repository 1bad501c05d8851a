"""`futbot monitor drift` on the shared market's stored data: the papermill notebook and the in-process path agree,
a point at t is the same whatever comes after t, the report site lists the report, and bad input is one line."""
import json, subprocess
import pandas as pd
from conftest import BIN
from futbot.drift import drift_at
from futbot.config import load_config
from futbot.intervals import to_ms
from futbot.monitor import drift_inputs, drift_settings

def futbot(*args):
    return subprocess.run([str(BIN / "futbot"), *map(str, args)], capture_output=True, text=True, timeout=900)

def test_drift_report_notebook_and_time_rule(trained_market, tmp_path):
    "The report through papermill equals the in-process one; cut earlier, the shared points are unchanged; listed on the site"
    d, _, models = trained_market
    art, f = tmp_path / "art", models["BTCUSDT"]
    common = ["--model", f, "--data-dir", d / "data", "--config", d / "cfg.yaml", "--artifacts-dir", art]
    end = json.loads((f / "metadata.json").read_text())["test_period"][1]
    r = futbot("monitor", "drift", *common, "--end", end, "--days", 6, "--step", "12h", "--run-id", "nb")
    assert r.returncode == 0, r.stderr[-3000:]
    run = art / "drift" / "nb"
    assert {"drift_report.ipynb", "drift_report.html", "series.csv", "psi.csv", "summary.json", "drift.png"} <= \
        {p.name for p in run.iterdir()}
    assert "BTCUSDT: drift" in r.stdout.splitlines()[-1] and str(run) in r.stdout, r.stdout
    s = json.loads((run / "summary.json").read_text())
    assert s["points"] == 13 and s["symbol"] == "BTCUSDT" and s["share"] == 0.3, s
    nb = pd.read_csv(run / "series.csv", index_col=0)
    assert (nb.rows >= 288).all() and set(nb.feature_level) <= {"ok", "warn", "act"}, nb
    html = (run / "drift_report.html").read_text()
    assert "Traceback" not in html and "PSI over time" in html and "<img" in html
    # in process, the same figures
    r = futbot("monitor", "drift", *common, "--end", end, "--days", 6, "--step", "12h", "--run-id", "py", "--no-notebook")
    assert r.returncode == 0, r.stderr[-3000:]
    py = pd.read_csv(art / "drift" / "py" / "series.csv", index_col=0)
    pd.testing.assert_frame_equal(nb, py)
    # the time rule: a report ending two days earlier gives the same figures at the points both have
    cut = pd.Timestamp(end) - pd.Timedelta("2D")
    r = futbot("monitor", "drift", *common, "--end", cut.isoformat(), "--days", 4, "--step", "12h", "--run-id", "cut",
               "--no-notebook")
    assert r.returncode == 0, r.stderr[-3000:]
    early = pd.read_csv(art / "drift" / "cut" / "series.csv", index_col=0)
    both = early.index.intersection(nb.index)
    assert len(both) >= 8, (early.index, nb.index)
    pd.testing.assert_frame_equal(early.loc[both], nb.loc[both])
    # and each point is `futbot.drift.drift_at` on the rows up to it, at the monitor's settings
    cf = load_config(d / "cfg.yaml")
    ref, X, P = drift_inputs("BTCUSDT", f, to_ms(cut), to_ms(cut), cf, d / "data")
    st = drift_settings(cf)
    rep = drift_at(ref, X, P, to_ms(cut), st["window"], st["warn"], st["act"], st["min_rows"], st["share"])
    last = early.iloc[-1]
    assert (last.rows, last.feature_level, last.n_act) == (rep.rows, rep.feature_level, rep.summary()["n_act"])
    # the report site lists it under Drift
    r = futbot("report", "--artifacts-dir", art, "--data-dir", d / "data", "--out", tmp_path / "site")
    assert r.returncode == 0, r.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Drift" in index and "drift/nb" in index, index[:3000]

def test_drift_report_bad_input_is_one_line(trained_market, tmp_path):
    d, _, models = trained_market
    common = ["--data-dir", d / "data", "--artifacts-dir", tmp_path / "art", "--config", d / "cfg.yaml"]
    for args, needle in ((["--model", models["BTCUSDT"], "--step", "0s"], "--step"),
                         (["--model", models["BTCUSDT"], "--step", "banana"], "--step banana"),
                         (["--model", models["BTCUSDT"], "--end", "garbage"], "--end garbage"),
                         (["--model", models["BTCUSDT"], "--start", "2024-13-01"], "--start 2024-13-01"),
                         (["--model", models["BTCUSDT"], "--days", "-1"], "--days"),
                         (["--model", tmp_path / "nothing"], "--model"),
                         (["--symbol", "BTCUSDT"], "production model"),
                         (["--model", models["BTCUSDT"], "--data-dir", tmp_path / "empty"], "futbot download")):
        r = futbot("monitor", "drift", *common, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr)
    assert not (tmp_path / "art" / "drift").exists() or not any((tmp_path / "art" / "drift").iterdir())
