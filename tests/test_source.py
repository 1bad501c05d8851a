"""Where stored data came from: `futbot download` from a real `futbot sim` records the market in
`{data_dir}/source.json`, `Market.from_info` rebuilds it (the same 1m bars, so the oracle of stored data is
the sim's), and a store refuses data from another market."""
import json, subprocess
import numpy as np, pytest
from conftest import BIN, ROOT, run_sim, http_json
from futbot.history import data_source, load_bars, SOURCE_FILE
from futbot.intervals import to_ms, MINUTE_MS, bar_opens
from futbot.sim import Market, SYMBOLS

FUTBOT = str(BIN / "futbot")
SYM = "BTCUSDT"
START, END = "2024-01-10", "2024-01-12"


def dl(url, data_dir, *extra):
    cmd = [FUTBOT, "download", "--symbol", SYM, "--exchange", url, "--data-dir", str(data_dir), "--no-progress",
           "--start", START, "--end", END, "--datasets", "klines", "--intervals", "1m", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def store(sim_url, tmp_path_factory):
    "Two days of 1m klines downloaded from the shared local exchange"
    d = tmp_path_factory.mktemp("source")
    r = dl(sim_url, d)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


def test_download_records_the_market(store, sim_url):
    src = data_source(store)
    info, _ = http_json(sim_url + "/_sim/info")
    assert src["exchange"] == sim_url and src["sim"] == info and src["updated"].startswith("20")
    assert (info["seed"], info["alpha_name"], info["start"]) == (7, "default", "2024-01-01T00:00:00Z")


def test_market_from_info_rebuilds_the_stored_bars(store):
    "The rebuilt market's 1m bars are the stored ones, tick for tick; its oracle covers every stored decision"
    m = Market.from_info(data_source(store)["sim"], symbols=[SYM])
    bars = load_bars(SYM, "1m", START, END, data_dir=store)
    k = m.klines(SYM, "1m", to_ms(START), to_ms(END) - 1, 5000)
    assert len(bars) == len(k["close"]) == 2 * 1440
    np.testing.assert_array_equal(bars.index.as_unit("ms").asi8, k["open_time"])
    tick = SYMBOLS[SYM]["tick"]
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(np.rint(bars[c].to_numpy() / tick).astype(np.int64), k[c])
    t = bar_opens(to_ms(START) + 5 * MINUTE_MS, to_ms(END) - 240 * MINUTE_MS, "5m")
    p = {s: m.oracle_proba(SYM, t, side=s) for s in ("long", "short")}
    assert all(((0 < v) & (v < 1)).all() for v in p.values())


def test_another_market_is_refused_the_same_market_is_not(store, tmp_path):
    "A store holds one market: another seed is refused with one line (exit 2); the same seed on another port is fine"
    before = (store / SOURCE_FILE).read_text()
    files = sorted(p.stat().st_mtime_ns for p in (store / "raw").rglob("*.parquet"))
    with run_sim(months=1, seed=8) as other:
        r = dl(other, store)
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and "seed 7" in line and "seed 8" in line and "--data-dir" in line, line
    assert (store / SOURCE_FILE).read_text() == before
    assert sorted(p.stat().st_mtime_ns for p in (store / "raw").rglob("*.parquet")) == files
    with run_sim(months=1, seed=7) as same:   # the same market (seed, alpha, start) behind another port
        r = dl(same, store)
    assert r.returncode == 0, r.stderr[-2000:]
    src = data_source(store)
    assert src["exchange"] == same and src["sim"]["months"] == 1 and src["sim"]["seed"] == 7


def test_no_record_and_a_bad_record(tmp_path):
    assert data_source(tmp_path) is None
    (tmp_path / SOURCE_FILE).write_text(json.dumps({"sim": None}))
    with pytest.raises(Exception, match="not a source record"): data_source(tmp_path)
