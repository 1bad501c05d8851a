"""futbot download against a real `futbot sim` process: stores exactly what the exchange serves,
survives SIGKILL, 429 storms and 5xx bursts, imports bulk archives identically, rejects bad input."""
import os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import BIN, ROOT, run_sim, sim_post, http_json
from futbot.history import load_bars, Store, DataError, to_ms

FUTBOT = str(BIN / "futbot")
RANGE = ["--start", "2024-01-10", "--end", "2024-01-12"]

def dl(url, data_dir, *extra, check=True, timeout=300):
    cmd = [FUTBOT, "download", "--symbol", "BTCUSDT", "--exchange", url, "--data-dir", str(data_dir), "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check: assert r.returncode == 0, r.stderr[-2000:]
    return r

def stored(data_dir):
    "Every stored dataset as frames, keyed by relative folder"
    st = Store(data_dir); out = {}
    for f in sorted((Path(data_dir) / "raw").rglob("*.parquet")):
        out.setdefault(str(f.parent.relative_to(Path(data_dir) / "raw")), []).append(pd.read_parquet(f))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}

def rest_klines(url, path, sym_param, interval, start, end):
    "Klines of [start, end) fetched page by page with a plain HTTP client"
    rows, t = [], to_ms(start)
    while t < to_ms(end):
        page, _ = http_json(f"{url}{path}?{sym_param}=BTCUSDT&interval={interval}&startTime={t}&endTime={to_ms(end) - 1}&limit=1500")
        if not page: break
        rows += page; t = page[-1][0] + 1
    return rows

def test_download_stores_exactly_what_the_exchange_serves(sim_url, tmp_path):
    r = dl(sim_url, tmp_path, *RANGE, "--datasets", "klines,mark,index,funding,open_interest", "--intervals", "1m,1h")
    assert "429s 0" in r.stdout
    for interval in ("1m", "1h"):
        bars = load_bars("BTCUSDT", interval, "2024-01-10", "2024-01-12", data_dir=tmp_path)
        ref = rest_klines(sim_url, "/fapi/v1/klines", "symbol", interval, "2024-01-10", "2024-01-12")
        assert len(bars) == len(ref) == (2880 if interval == "1m" else 48)
        np.testing.assert_array_equal(bars.index.as_unit("ms").asi8, np.array([k[0] for k in ref]))
        for i, c in enumerate(["open", "high", "low", "close", "volume"], start=1):
            np.testing.assert_array_equal(bars[c].to_numpy(), np.array([float(k[i]) for k in ref]))
        np.testing.assert_array_equal(bars["trades"].to_numpy(), np.array([k[8] for k in ref]))
        assert bars.dtypes["trades"] == np.int64 and bars.dtypes["close"] == np.float64 and str(bars.index.tz) == "UTC"
    mark = load_bars("BTCUSDT", "1m", "2024-01-10", "2024-01-12", data_dir=tmp_path, dataset="mark")
    ref = rest_klines(sim_url, "/fapi/v1/markPriceKlines", "symbol", "1m", "2024-01-10", "2024-01-12")
    np.testing.assert_array_equal(mark["close"].to_numpy(), np.array([float(k[4]) for k in ref]))
    idx = load_bars("BTCUSDT", "1m", "2024-01-10", "2024-01-12", data_dir=tmp_path, dataset="index")
    ref = rest_klines(sim_url, "/fapi/v1/indexPriceKlines", "pair", "1m", "2024-01-10", "2024-01-12")
    np.testing.assert_array_equal(idx["close"].to_numpy(), np.array([float(k[4]) for k in ref]))
    f = Store(tmp_path).load("BTCUSDT", "funding")
    ref, _ = http_json(f"{sim_url}/fapi/v1/fundingRate?symbol=BTCUSDT&startTime={to_ms('2024-01-10')}&endTime={to_ms('2024-01-12') - 1}&limit=1000")
    assert len(f) == len(ref) == 6
    np.testing.assert_array_equal(f["funding_rate"].to_numpy(), np.array([float(x["fundingRate"]) for x in ref]))
    # open interest: the exchange keeps 30 days; the range asked is older, so nothing is stored and nothing is invented
    assert len(Store(tmp_path).load("BTCUSDT", "open_interest")) == 0

def test_rerun_downloads_nothing_new(sim_url, tmp_path):
    dl(sim_url, tmp_path, *RANGE, "--datasets", "klines", "--intervals", "5m")
    before = stored(tmp_path)
    r = dl(sim_url, tmp_path, *RANGE, "--datasets", "klines", "--intervals", "5m")
    assert ": 2 requests" in r.stdout.splitlines()[-1], r.stdout   # exchangeInfo and time only
    after = stored(tmp_path)
    assert before.keys() == after.keys() and all(before[k].equals(after[k]) for k in before)

def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    with run_sim(months=2) as url:
        args = ["--start", "2024-01-01", "--end", "2024-02-01", "--datasets", "klines,mark", "--intervals", "1m,5m", "--workers", "1"]
        dl(url, tmp_path / "ref", *args)
        ref = stored(tmp_path / "ref")
        for files in (1, 2):     # killed as the first file lands (klines 1m), and as the second does (klines 5m)
            d = tmp_path / f"killed{files}"
            cmd = [FUTBOT, "download", "--symbol", "BTCUSDT", "--exchange", url, "--data-dir", str(d), "--no-progress", *args]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
            t0 = time.time()
            while len(list((d / "raw").rglob("*.parquet"))) < files and time.time() - t0 < 60: time.sleep(0.005)
            assert p.poll() is None, "the download finished before it could be killed: make the range longer"
            os.kill(p.pid, signal.SIGKILL); p.wait()
            partial = stored(d)
            assert sum(len(v) for v in partial.values()) < sum(len(v) for v in ref.values())
            dl(url, d, *args)
            got = stored(d)
            assert got.keys() == ref.keys()
            for k in ref: pd.testing.assert_frame_equal(got[k], ref[k], check_exact=True)

def test_429_storm_and_5xx_burst_lose_no_rows(tmp_path):
    with run_sim(months=2) as url:
        args = ["--start", "2024-01-05", "--end", "2024-01-20", "--datasets", "klines,funding", "--intervals", "1m"]
        dl(url, tmp_path / "ref", *args)
        sim_post(url, "/_sim/faults", {"http_429": 4, "http_5xx": 6})
        r = dl(url, tmp_path / "faulty", *args)
        assert "429s 4" in r.stdout and "retries 6" in r.stdout, r.stdout
        a, b = stored(tmp_path / "ref"), stored(tmp_path / "faulty")
        assert a.keys() == b.keys()
        for k in a: pd.testing.assert_frame_equal(a[k], b[k], check_exact=True)

def test_bulk_import_equals_rest_download(sim_url, tmp_path):
    vis = tmp_path / "vision"
    r = subprocess.run([FUTBOT, "sim", "vision", "--out", str(vis), "--months", "2", "--start", "2024-01-01", "--seed", "7",
                        "--symbols", "BTCUSDT", "--end", "2024-01-03", "--datasets", "klines,markPriceKlines,indexPriceKlines,aggTrades,fundingRate",
                        "--intervals", "1m,1h"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    imp = dl(sim_url, tmp_path / "imported", "--source", "vision", "--from", str(vis))
    dl(sim_url, tmp_path / "rest", "--start", "2024-01-01", "--end", "2024-01-03", "--datasets", "klines,mark,index,funding", "--intervals", "1m,1h")
    a, b = stored(tmp_path / "imported"), stored(tmp_path / "rest")
    for k in ("BTCUSDT/klines/1m", "BTCUSDT/klines/1h", "BTCUSDT/mark/1m", "BTCUSDT/index/1m"):
        pd.testing.assert_frame_equal(a[k], b[k], check_exact=True)
    assert "BTCUSDT/funding" not in a       # fundingRate archives are monthly only, like Binance's
    # aggTrades: the archive's first hour equals the REST answer for that hour, trade for trade
    t = a["BTCUSDT/agg_trades"]
    ref, _ = http_json(f"{sim_url}/fapi/v1/aggTrades?symbol=BTCUSDT&startTime={to_ms('2024-01-01')}&endTime={to_ms('2024-01-01T00:10') - 1}&limit=1000")
    first = t[t["time"] < pd.Timestamp("2024-01-01T00:10", tz="UTC")]
    assert len(first) == len(ref) > 0
    np.testing.assert_array_equal(first["agg_id"].to_numpy(), [x["a"] for x in ref])
    np.testing.assert_array_equal(first["price"].to_numpy(), [float(x["p"]) for x in ref])
    # klines aggregate from the archive's own aggTrades
    k1 = a["BTCUSDT/klines/1m"].set_index("open_time")
    m = t.assign(minute=t["time"].dt.floor("1min")).groupby("minute")
    np.testing.assert_allclose(m["qty"].sum().to_numpy(), k1["volume"].loc[m["qty"].sum().index].to_numpy(), rtol=1e-12)

def test_monthly_archives_then_daily(sim_url, tmp_path):
    "A monthly archive for January plus daily ones for February: the import equals the REST download"
    vis = tmp_path / "vision"
    r = subprocess.run([FUTBOT, "sim", "vision", "--out", str(vis), "--months", "2", "--start", "2024-01-01", "--symbols", "BTCUSDT",
                        "--end", "2024-02-03", "--datasets", "klines,fundingRate", "--intervals", "1h"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert len(list(vis.rglob("monthly/klines/*/1h/*.zip"))) == 1 and len(list(vis.rglob("daily/klines/*/1h/*.zip"))) == 2
    dl(sim_url, tmp_path / "imported", "--source", "vision", "--from", str(vis))
    dl(sim_url, tmp_path / "rest", "--start", "2024-01-01", "--end", "2024-02-03", "--datasets", "klines,funding", "--intervals", "1h")
    a, b = stored(tmp_path / "imported"), stored(tmp_path / "rest")
    pd.testing.assert_frame_equal(a["BTCUSDT/klines/1h"], b["BTCUSDT/klines/1h"], check_exact=True)
    jan = b["BTCUSDT/funding"][b["BTCUSDT/funding"]["funding_time"] < pd.Timestamp("2024-02-01", tz="UTC")]
    assert len(a["BTCUSDT/funding"]) == len(jan) > 80
    np.testing.assert_array_equal(a["BTCUSDT/funding"]["funding_rate"].to_numpy(), jan["funding_rate"].to_numpy())
    np.testing.assert_array_equal(a["BTCUSDT/funding"]["funding_time"].to_numpy(), jan["funding_time"].to_numpy())

def test_tampered_archive_is_refused(sim_url, tmp_path):
    vis = tmp_path / "vision"
    subprocess.run([FUTBOT, "sim", "vision", "--out", str(vis), "--months", "2", "--start", "2024-01-01", "--symbols", "BTCUSDT",
                    "--end", "2024-01-02", "--datasets", "klines", "--intervals", "1h", "--no-header"], check=True, capture_output=True, timeout=300, cwd=ROOT)
    z = next(vis.rglob("*.zip")); z.write_bytes(z.read_bytes()[:-5] + b"xxxxx")
    r = dl(sim_url, tmp_path / "d", "--source", "vision", "--from", str(vis), check=False)
    assert r.returncode == 2 and "does not match its .CHECKSUM" in r.stderr and "Traceback" not in r.stderr

@pytest.mark.parametrize("extra,needle", [
    (["--symbol", "FOOUSDT", "--start", "2024-01-10"], "unknown symbol FOOUSDT"),
    (["--intervals", "7m", "--start", "2024-01-10"], "unknown interval '7m'"),
    (["--start", "2024-01-10", "--end", "2024-01-05"], "is not after start"),
    (["--datasets", "candles", "--start", "2024-01-10"], "unknown dataset 'candles'"),
])
def test_bad_input_one_line_exit_2(sim_url, tmp_path, extra, needle):
    r = dl(sim_url, tmp_path, *extra, check=False)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr

def test_unwritable_data_dir(sim_url, tmp_path):
    d = tmp_path / "ro"; d.mkdir(); (d / "raw").write_text("a file where a folder should be")
    r = dl(sim_url, d, *RANGE, check=False)
    assert r.returncode == 2 and "not writable" in r.stderr and r.stderr.count("\n") == 1, r.stderr

def test_corrupted_file_detected_on_load_and_refetched(sim_url, tmp_path):
    dl(sim_url, tmp_path, "--start", "2024-01-30", "--end", "2024-02-02", "--datasets", "klines", "--intervals", "1h")
    good = load_bars("BTCUSDT", "1h", "2024-01-30", "2024-02-02", data_dir=tmp_path)
    jan = Store(tmp_path).path("BTCUSDT", "klines", "1h", "2024-01")
    jan.write_bytes(jan.read_bytes()[:100])
    with pytest.raises(DataError, match="2024-01.parquet: corrupted"): load_bars("BTCUSDT", "1h", "2024-01-30", "2024-02-02", data_dir=tmp_path)
    assert len(load_bars("BTCUSDT", "1h", "2024-02-01", "2024-02-02", data_dir=tmp_path)) == 24   # reads only the months asked for
    dl(sim_url, tmp_path, "--start", "2024-01-30", "--end", "2024-02-02", "--datasets", "klines", "--intervals", "1h")
    pd.testing.assert_frame_equal(load_bars("BTCUSDT", "1h", "2024-01-30", "2024-02-02", data_dir=tmp_path), good, check_exact=True)

def test_gap_the_exchange_really_has_is_recorded_never_filled(sim_url, tmp_path):
    "The exchange has nothing before its history start: the gap is re-requested once, recorded, and left empty"
    r = dl(sim_url, tmp_path, "--start", "2023-12-31", "--end", "2024-01-02", "--datasets", "klines", "--intervals", "1h")
    bars = load_bars("BTCUSDT", "1h", "2023-12-30", "2024-01-03", data_dir=tmp_path)
    assert len(bars) == 24 and bars.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert Store(tmp_path).gaps("BTCUSDT", "klines", "1h") == [(to_ms("2023-12-31"), to_ms("2024-01-01"))]
    rep = __import__("json").loads((tmp_path / "raw/BTCUSDT/klines/1h/validation.json").read_text())
    assert rep["gaps"] == [["2023-12-31T00:00:00Z", "2024-01-01T00:00:00Z"]] and rep["rows"] == 24
    again = dl(sim_url, tmp_path, "--start", "2023-12-31", "--end", "2024-01-02", "--datasets", "klines", "--intervals", "1h")
    assert ": 2 requests" in again.stdout.splitlines()[-1], again.stdout     # a recorded gap is not asked for again

def test_recent_trades_book_and_statistics(sim_url, tmp_path):
    r = dl(sim_url, tmp_path, "--months", "1", "--datasets", "agg_trades,book,open_interest,long_short,taker_ratio,premium",
           "--agg-hours", "0.5", "--book-every", "0.5")
    st = Store(tmp_path)
    t = st.load("BTCUSDT", "agg_trades")
    assert len(t) > 100
    np.testing.assert_array_equal(np.diff(t["agg_id"].to_numpy()), 1)                  # no trade lost or repeated
    np.testing.assert_array_equal(t["first_id"].to_numpy()[1:], t["last_id"].to_numpy()[:-1] + 1)
    a, b = to_ms(t["time"].iloc[0]), to_ms(t["time"].iloc[0]) + 600_000
    ref, _ = http_json(f"{sim_url}/fapi/v1/aggTrades?symbol=BTCUSDT&startTime={a}&endTime={b - 1}&limit=1000")
    got = t[t["time"] < pd.Timestamp(b, unit="ms", tz="UTC")]
    np.testing.assert_array_equal(got["agg_id"].to_numpy(), [x["a"] for x in ref])
    np.testing.assert_array_equal(got["qty"].to_numpy(), [float(x["q"]) for x in ref])
    book = st.load("BTCUSDT", "book")
    snaps = book.groupby("time")
    assert snaps.ngroups >= 1 and (snaps.size() == 200).all()
    for _, s in snaps:
        bid, ask = s[s.side == "bid"].sort_values("level"), s[s.side == "ask"].sort_values("level")
        assert (np.diff(bid.price) < 0).all() and (np.diff(ask.price) > 0).all() and bid.price.iloc[0] < ask.price.iloc[0]
    for ds in ("open_interest", "long_short", "taker_ratio"):
        d = st.load("BTCUSDT", ds)
        assert len(d) > 8000, (ds, len(d))                     # ~30 days of 5-minute rows: all the exchange keeps
        assert (np.diff(d["timestamp"].astype("int64").to_numpy()) > 0).all()
    assert len(load_bars("BTCUSDT", "1m", data_dir=tmp_path, dataset="premium")) > 40000

def test_loaded_data_feeds_features(sim_url, tmp_path):
    "Stored bars and extras go straight into build_features; extras join as of the time they became public"
    from futbot.history import load_extras
    from futbot.features import build_features
    dl(sim_url, tmp_path, "--start", "2024-01-01", "--end", "2024-02-29", "--datasets", "klines,mark,index,funding,open_interest",
       "--intervals", "1m,5m,1h,4h,1d")
    bars = {iv: load_bars("BTCUSDT", iv, data_dir=tmp_path) for iv in ("1m", "5m", "1h", "4h", "1d")}
    ex = load_extras("BTCUSDT", data_dir=tmp_path)
    assert {"funding", "mark", "index", "open_interest"} <= set(ex)
    oi = Store(tmp_path).load("BTCUSDT", "open_interest")
    assert ex["open_interest"].index[0] == oi["timestamp"].iloc[0] + pd.Timedelta("5min")
    f = build_features(bars, ex)
    assert len(f) > 1000 and {"funding_rate", "mark_index_dev", "oi"} <= set(f.columns)
    last = f.index[-1]
    pub = ex["open_interest"][ex["open_interest"].index <= last]["open_interest"].iloc[-1]
    assert f["oi"].iloc[-1] == pub

def test_418_ban_stops_the_run_with_a_clear_message(tmp_path):
    "An IP already banned (HTTP 418) ends the download at once with one line, exit 2, nothing stored half-way"
    import urllib.error
    with run_sim("--weight-limit", "60", months=1) as url:
        codes = []
        for _ in range(30):            # a careless client: keeps going after 429s until the exchange bans the IP
            try: http_json(f"{url}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=1000"); codes.append(200)
            except urllib.error.HTTPError as e: codes.append(e.code)
        assert 429 in codes and codes[-1] == 418, codes
        r = dl(url, tmp_path, "--start", "2024-01-10", "--end", "2024-01-11", "--datasets", "klines", "--intervals", "1h", check=False)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and len(lines) == 1 and "banned" in lines[0] and "418" in lines[0], r.stderr
        assert not list((tmp_path / "raw").rglob("*.parquet"))

def test_metrics_archives_equal_rest_open_interest(sim_url, tmp_path):
    "Open-interest history beyond the REST window comes from daily `metrics` archives, equal to REST where both exist"
    vis = tmp_path / "vision"
    r = subprocess.run([FUTBOT, "sim", "vision", "--out", str(vis), "--months", "2", "--start", "2024-01-01", "--symbols", "BTCUSDT",
                        "--end", "2024-02-06", "--datasets", "metrics"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert len(list(vis.rglob("daily/metrics/BTCUSDT/*.zip"))) == 36     # a file per day, months included
    dl(sim_url, tmp_path / "imported", "--source", "vision", "--from", str(vis))
    dl(sim_url, tmp_path / "rest", "--months", "2", "--datasets", "open_interest")
    a, b = Store(tmp_path / "imported").load("BTCUSDT", "open_interest"), Store(tmp_path / "rest").load("BTCUSDT", "open_interest")
    assert a["timestamp"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC") and b["timestamp"].iloc[0] > pd.Timestamp("2024-01-29", tz="UTC")
    both = a.merge(b, on="timestamp", suffixes=("_v", "_r"))
    assert len(both) > 1000
    np.testing.assert_array_equal(both["sum_open_interest_v"], both["sum_open_interest_r"])
    np.testing.assert_array_equal(both["sum_open_interest_value_v"], both["sum_open_interest_value_r"])
