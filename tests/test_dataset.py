"""futbot features: the real command on stored bars builds a Parquet table with a manifest, reuses it when
nothing changed, rebuilds on new settings or new data, takes hourly-only bars, and says what to download."""
import json, os, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import BIN, ROOT
from futbot.features import synth_bars
from futbot.history import Store
from futbot.dataset import store_bars, load_dataset

FUTBOT = str(BIN / "futbot")
SMALL = """data:
  timeframes: [1m, 5m]
  base_timeframe: 5m
  symbols: [BTCUSDT]
labels:
  horizon: {horizon}
  profit_threshold: 0.004
  stop_threshold: 0.002
"""

def features(data_dir, *args, cfg=None, env=None):
    cmd = [FUTBOT, "features", "--data-dir", str(data_dir), *args] + (["--config", str(cfg)] if cfg else [])
    env = dict(os.environ, FUTBOT_LOG_DIR=str(Path(data_dir) / "logs"), **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)

def one_error_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip() and '"level"' not in l]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    return lines[0]

def funding(start, days):
    "Funding rows every 8h, as `futbot download` stores them"
    t = pd.date_range(start, periods=3 * days, freq="8h", tz="UTC").as_unit("ms")
    return pd.DataFrame({"funding_time": t, "funding_rate": 1e-4 * np.sin(np.arange(len(t))), "mark_price": 30000.0})

@pytest.fixture
def store(tmp_path):
    "Three days of 1m BTCUSDT bars and funding in a real store, and a small config"
    d = tmp_path / "data"
    store_bars(synth_bars(60 * 24 * 3, seed=4, vol=0.001), "BTCUSDT", "1m", d)
    Store(d).write_rows("BTCUSDT", "funding", None, funding("2024-01-01", 3))
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL.format(horizon="1h"))
    return d, cfg

def test_build_reuse_rebuild(store, tmp_path):
    d, cfg = store
    r = features(d, "--symbol", "BTCUSDT", cfg=cfg)
    assert r.returncode == 0, r.stderr
    out = d / "features" / "BTCUSDT"
    man = json.loads((out / "manifest.json").read_text())
    assert {"features.parquet", "labels.parquet"} <= {p.name for p in out.iterdir()}
    assert man["schema"]["names"][:1] and man["rows"] > 500 and "funding_rate" in man["schema"]["names"]
    assert list(man["inputs"]) == ["funding/2024-01.parquet", "klines/1m/2024-01.parquet"]
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("BTCUSDT: built:") and str(out) in line
    assert f"{man['rows']:,} rows x {man['columns']} features" in line
    X, L, _ = load_dataset("BTCUSDT", d)
    assert X.index.equals(L.index) and L["label"].notna().sum() > 100
    mt = {f: (out / f).stat().st_mtime_ns for f in ("features.parquet", "labels.parquet", "manifest.json")}

    again = features(d, "--symbol", "BTCUSDT", cfg=cfg)                               # nothing changed
    assert again.returncode == 0 and "reused the cache" in again.stdout, again.stdout + again.stderr
    assert {f: (out / f).stat().st_mtime_ns for f in mt} == mt

    cfg.write_text(SMALL.format(horizon="2h"))                                       # a changed setting
    r2 = features(d, "--symbol", "BTCUSDT", cfg=cfg)
    assert r2.returncode == 0 and "built:" in r2.stdout, r2.stderr
    man2 = json.loads((out / "manifest.json").read_text())
    assert man2["settings"]["labels"]["labels.horizon"] == "2h" and man2["key"] != man["key"]

    store_bars(synth_bars(60 * 24, seed=5, vol=0.001, start="2024-01-04"), "BTCUSDT", "1m", d)   # new data
    r3 = features(d, "--symbol", "BTCUSDT", cfg=cfg)
    assert r3.returncode == 0 and "built:" in r3.stdout, r3.stderr
    man3 = json.loads((out / "manifest.json").read_text())
    assert man3["rows"] == man2["rows"] + 24 * 12 and man3["inputs"] != man2["inputs"]

def test_hourly_only_bars_go_through_features_and_labels(tmp_path):
    "Bars from another source, 1h only, with the shipped config (base 5m): hourly decisions, labels on hourly bars"
    d = tmp_path / "data"
    store_bars(synth_bars(24 * 40, seed=6, interval="1h", vol=0.002), "ETHUSDT", "1h", d)
    r = features(d, "--symbol", "ETHUSDT")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("base_timeframe_fallback") == 1 and r.stderr.count("labels_coarse_path") == 1   # said once
    assert "1m,5m,4h,1d not stored" in r.stdout and "1h decisions" in r.stdout
    X, L, man = load_dataset("ETHUSDT", d)
    assert man["base"] == "1h" and man["timeframes"] == ["1h"] and man["label_path"] == "1h"
    assert (X.index.to_series().diff().dropna() == pd.Timedelta("1h")).all() and len(X) > 500
    assert set(L["label"].dropna().unique()) == {0.0, 1.0}
    assert "labels on 1h bars" in r.stdout.strip().splitlines()[-1]

def test_missing_data_and_bad_input_one_line(store, tmp_path):
    d, cfg = store
    line = one_error_line(features(d, "--symbol", "XRPUSDT", cfg=cfg))
    assert "no stored bars for XRPUSDT" in line and "stored: BTCUSDT" in line
    assert "futbot download --symbol XRPUSDT" in line
    cfg2 = tmp_path / "two.yaml"
    cfg2.write_text(SMALL.format(horizon="1h").replace("[BTCUSDT]", "[BTCUSDT, ETHUSDT]"))
    line = one_error_line(features(d, cfg=cfg2))                                        # --symbol absent: data.symbols
    assert "futbot download --symbol ETHUSDT" in line
    line = one_error_line(features(d, "--symbol", "BTCUSDT", "--start", "2024-02-01", "--end", "2024-01-01", cfg=cfg))
    assert "is not after --start" in line
    line = one_error_line(features(d, "--symbol", "BTCUSDT", "--start", "2025-01-01", cfg=cfg))
    assert "futbot download --symbol BTCUSDT --start 2025-01-01" in line
    assert not (d / "features").exists()                                                 # nothing half-built
