"""No lookahead at any boundary: the perturbation with its cut-off one base bar before a 1h, a 4h and a 1d close and at
random times, on synthetic data and on data stored by `futbot download` from a real `futbot sim` (read back through
`load_bars` and `load_extras`); a per-row check that each timeframe's columns at t come from its last bar closed by t.
Each check is kept with a planted bug it catches (a timeframe joined one base bar early; open interest stamped before
it is published)."""
import shutil, subprocess, time
from bisect import bisect_right
from pathlib import Path
import numpy as np, pandas as pd, pytest
from conftest import BIN, ROOT, http_json
import futbot.features as F, futbot.history as H
from futbot.features import synth_bars, resample_bars, build_features, tf_block, perturb_after
from futbot.intervals import MINUTE_MS, HOUR_MS, DAY_MS, interval_ms, index_ms, ms_to_iso, to_ms
from test_features import ALL, synth_extras

TFS = ALL["data.timeframes"]
BASE_MS = interval_ms(ALL["data.base_timeframe"])
SYMBOL = "BTCUSDT"
SYNTH_AT = 0.85           # synthetic cut-offs near this fraction of the range (past every timeframe's warm-up)
N_RANDOM = 3              # random cut-offs per run

# ---------------------------------------------------------------- the checks

def cutoffs(t:pd.DatetimeIndex, at:float=1.0, seed:int=0)->dict:
    "Cut-offs one base bar before a 1h close (not 4h), a 4h close (not 1d) and a 1d close, nearest `at`; random times"
    ms = index_ms(t)
    target, nxt = ms[0] + at * (ms[-1] - ms[0]), ms + BASE_MS
    inside = ms < ms[-1]                                  # a row after T must exist, or the check is blind
    near = lambda ok: int(ms[ok & inside][np.argmin(np.abs(ms[ok & inside] - target))])
    h4 = 4 * HOUR_MS
    out = {"before_1h_close": near((nxt % HOUR_MS == 0) & (nxt % h4 != 0)),
           "before_4h_close": near((nxt % h4 == 0) & (nxt % DAY_MS != 0)), "before_1d_close": near(nxt % DAY_MS == 0)}
    for i, x in enumerate(np.random.default_rng(seed).integers(ms[0], ms[-1], N_RANDOM)): out[f"random_{i}"] = int(x)
    return {k: pd.Timestamp(v, unit="ms", tz="UTC") for k, v in out.items()}

def compare_before(X:pd.DataFrame, Xp:pd.DataFrame, T:pd.Timestamp)->set:
    "Raise unless rows with t <= T are bit-identical; return the columns the scramble changed after T"
    assert X.columns.equals(Xp.columns) and X.index.equals(Xp.index), "the perturbation changed the rows or columns"
    A, B = X.to_numpy(np.float64), Xp.to_numpy(np.float64)
    diff, before = A.view(np.int64) != B.view(np.int64), (X.index <= T)[:, None]
    bad = np.argwhere(diff & before)
    if len(bad):
        r, c = bad[0]
        cols = sorted({X.columns[j] for j in bad[:, 1]})
        raise AssertionError(f"lookahead: cut-off T={T}: {len(cols)} columns changed at t <= T when only data after "
                             f"T changed, first {X.columns[c]} at t={X.index[r]} ({A[r, c]} -> {B[r, c]}); {cols[:6]}")
    changed = (diff & ~before).any(axis=0)
    assert changed.any(), f"cut-off T={T}: the scramble changed nothing after T, so the check would be blind"
    return set(X.columns[changed])

def perturbation_check(bars:dict, extras:dict, T:pd.Timestamp, X:pd.DataFrame, seed:int=0)->set:
    "Scramble every value after T (`perturb_after`); rows t <= T of `X` (built with drop_warmup=False) must not move"
    pb, pe = perturb_after(bars, T, seed=seed, extras=extras)
    return compare_before(X, build_features(pb, pe, config=ALL, drop_warmup=False), T)

def asof_check(X:pd.DataFrame, bars:dict, tfs:list):
    "Raise unless each timeframe's columns at t are its own block's values at its last bar whose close is <= t"
    t = index_ms(X.index).tolist()
    for tf in tfs:
        b = bars[tf]
        names, M, _ = tf_block(b, tf)                     # the block on its own; the stamps it returns are not used
        close = (index_ms(b.index) + interval_ms(tf)).tolist()
        pos = np.array([bisect_right(close, x) - 1 for x in t])          # the last bar with close <= t
        ref = np.where((pos >= 0)[:, None], M[np.maximum(pos, 0)], np.nan)
        got = X[names].to_numpy(np.float64)
        bad = np.argwhere((got != ref) & ~(np.isnan(got) & np.isnan(ref)))
        if not len(bad): continue
        r, c = bad[0]
        hit = np.flatnonzero(M[:, c] == got[r, c])
        which = f"that of the {tf} bar closing at {ms_to_iso(close[hit[0]])}" if len(hit) else "no bar's value"
        last = ms_to_iso(close[pos[r]]) if pos[r] >= 0 else "none"
        raise AssertionError(f"lookahead: {names[c]} at t={ms_to_iso(t[r])} is {which}; the last {tf} bar closed by t "
                             f"closes at {last} ({len(np.unique(bad[:, 0]))} rows wrong)")

def plant_early_join(monkeypatch, tf:str):
    "The planted bug: bars of `tf` join the decision grid one base bar before their close"
    real = F.tf_block
    def early(bars, interval, *a, **kw):
        names, M, close = real(bars, interval, *a, **kw)
        return names, M, (close - BASE_MS if interval == tf else close)
    monkeypatch.setattr(F, "tf_block", early)

# ---------------------------------------------------------------- synthetic bars and extras

@pytest.fixture(scope="module")
def synth():
    m1 = synth_bars(60 * 24 * 45, seed=71)               # 45 days: every 1d feature present for the last 11
    ex = synth_extras(m1, seed=7, trades_from=m1.index[-60 * 24 * 3])
    bars = {tf: resample_bars(m1, tf) for tf in TFS}
    return bars, ex, build_features(bars, ex, config=ALL, drop_warmup=False)

def test_cutoffs_sit_one_base_bar_before_each_close(synth):
    X = synth[2]
    c = {k: to_ms(v) + BASE_MS for k, v in cutoffs(X.index, SYNTH_AT).items()}
    assert c["before_1h_close"] % HOUR_MS == 0 and c["before_1h_close"] % (4 * HOUR_MS) != 0
    assert c["before_4h_close"] % (4 * HOUR_MS) == 0 and c["before_4h_close"] % DAY_MS != 0
    assert c["before_1d_close"] % DAY_MS == 0
    bar_cols = [k for k in X.columns if k.rsplit("_", 1)[-1] in TFS]
    assert X.loc[X.index <= cutoffs(X.index, SYNTH_AT)["before_1d_close"], bar_cols].iloc[-1].notna().all()  # warm

def test_no_lookahead_at_any_cutoff(synth):
    "Bit-identical rows up to T with T next to every higher-timeframe close and at random times; extras included"
    bars, ex, X = synth
    reached = set()
    for i, T in enumerate(cutoffs(X.index, SYNTH_AT).values()): reached |= perturbation_check(bars, ex, T, X, seed=i)
    for c in ("close_1h", "close_4h", "close_1d", "funding_rate", "oi", "mark_dev", "spread", "price_impact"):
        assert c in reached, c                                       # the scramble reached every source

def test_every_timeframe_joins_its_last_closed_bar(synth):
    bars, _, X = synth
    asof_check(X, bars, TFS)

@pytest.mark.parametrize("tf", ["1h", "4h", "1d"])
def test_lookahead_checks_can_fail(synth, monkeypatch, tf):
    "A timeframe visible one base bar before its close fails the perturbation at its cut-off and the per-row check"
    bars, ex, _ = synth
    plant_early_join(monkeypatch, tf)
    Xb = build_features(bars, ex, config=ALL, drop_warmup=False)
    T = cutoffs(Xb.index, SYNTH_AT)[f"before_{tf}_close"]
    with pytest.raises(AssertionError, match=rf"lookahead: cut-off T=.*_{tf}\b"): perturbation_check(bars, ex, T, Xb)
    with pytest.raises(AssertionError, match=rf"lookahead: \w+_{tf} at t=.* closing at"): asof_check(Xb, bars, [tf])
    asof_check(Xb, bars, [x for x in TFS if x != tf])                # the others are untouched

# ---------------------------------------------------------------- stored data: futbot download -> load_extras

DATASETS = "klines,mark,index,funding,open_interest,long_short,agg_trades,book"
AGG_HOURS = 3             # hours of recent aggTrades downloaded
BOOK_EVERY_S = 0.25       # wall seconds between book snapshots while a download runs
DAYS = 3                  # days of history before the exchange's current day
STATS_LAG = 5 * MINUTE_MS # a 5-minute statistics row (open interest, long/short) is public at the end of its period
PUBLIC = {"funding": ("funding_time", 0), "open_interest": ("timestamp", STATS_LAG),
          "long_short": ("timestamp", STATS_LAG), "agg_trades": ("time", 0), "book": ("time", 0)}
KLINE_LIKE = ("klines", "mark", "index")                          # public at open_time + interval
KEPT = {"agg_id", "first_id", "last_id", "level", "last_update_id"}  # identities and positions, not values
SOURCES = {"funding": "funding_rate", "open_interest": "oi", "long_short": "ls_ratio", "mark": "mark_dev",
           "index": "basis", "book": "spread", "trades": "price_impact"}

def sim_now(url): return http_json(f"{url}/_sim/clock")[0]["now"]   # the exchange's simulated clock (ms)

def download(url, data_dir, start):
    "`futbot download` of every dataset from `start` to the exchange's now (a rerun fetches what is new)"
    cmd = [str(BIN / "futbot"), "download", "--symbol", SYMBOL, "--exchange", url, "--data-dir", str(data_dir),
           "--no-progress", "--start", start, "--datasets", DATASETS, "--intervals", ",".join(TFS),
           "--agg-hours", str(AGG_HOURS), "--book-every", str(BOOK_EVERY_S)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]

@pytest.fixture(scope="module")
def stored(sim_url, tmp_path_factory):
    "A few days of every dataset load_extras reads, downloaded twice so that base bars close after book snapshots"
    d = tmp_path_factory.mktemp("stored")
    start = ms_to_iso(sim_now(sim_url) // DAY_MS * DAY_MS - DAYS * DAY_MS)[:10]
    download(sim_url, d, start)
    snap = to_ms(H.Store(d).load(SYMBOL, "book")["time"].max())   # taken at the exchange's now while the run lasted
    ready = snap // BASE_MS * BASE_MS + 2 * BASE_MS + 30 * 1000   # the bar holding it and the next have closed
    while sim_now(sim_url) < ready: time.sleep(0.2)               # 5-10 s at the test exchange's speed
    download(sim_url, d, start)
    return d

def stored_features(d):
    "Bars and default-grid features (no warm-up dropped) from the store in `d`, through load_bars and load_extras"
    bars = {tf: H.load_bars(SYMBOL, tf, data_dir=d) for tf in TFS}
    return bars, build_features(bars, H.load_extras(SYMBOL, data_dir=d), config=ALL, drop_warmup=False)

def perturb_raw(src:Path, dst:Path, T:pd.Timestamp, seed:int):
    "A copy of the store with every raw value not yet public at T scrambled (times, ids and book levels kept)"
    shutil.copytree(src, dst)
    rng, t = np.random.default_rng(seed), to_ms(T)
    for f in sorted((dst / "raw" / SYMBOL).rglob("*.parquet")):
        ds = f.relative_to(dst / "raw" / SYMBOL).parts[0]
        df = H.read_parquet(f)
        if ds in KLINE_LIKE: pub = index_ms(df["open_time"]) + interval_ms(f.parent.name)
        else: pub = index_ms(df[PUBLIC[ds][0]]) + PUBLIC[ds][1]
        after = pub > t
        for c in df.columns:
            x = df[c].to_numpy().copy()
            if c in KEPT or x.dtype.kind not in "bif": continue
            if x.dtype.kind == "b": x[after] ^= rng.random(after.sum()) < 0.5
            else: x[after] = (x[after] * rng.uniform(0.5, 1.5, after.sum())).astype(x.dtype)
            df[c] = x
        H.atomic_write_parquet(df, f)

def stored_cutoffs(X:pd.DataFrame, book:pd.DataFrame)->dict:
    "The boundary and random cut-offs, plus the first decision time after a book snapshot (more snapshots follow)"
    cuts = cutoffs(X.index, 1.0)
    cuts["after_first_book"] = X.index[X.index >= book.index[0]][0]
    return cuts

def test_stored_data_no_lookahead(stored, tmp_path):
    "Every raw value public after T scrambled in the files: rows t <= T of the features are bit-identical"
    bars, X = stored_features(stored)
    ex = H.load_extras(SYMBOL, data_dir=stored)
    assert set(SOURCES) <= set(ex), sorted(ex)
    asof_check(X, bars, TFS)
    reached, used = set(), set()
    for i, (name, T) in enumerate(stored_cutoffs(X, ex["book"]).items()):
        perturb_raw(stored, tmp_path / name, T, seed=i)
        reached |= compare_before(X, stored_features(tmp_path / name)[1], T)
        used |= set(X.columns[X[X.index <= T].notna().any().to_numpy()])
    for ds, col in SOURCES.items():
        assert col in used, f"{ds}: no row at or before a cut-off uses it, so the check says nothing about it"
        assert col in reached, f"{ds}: the scramble never reached {col}"

def _oi_at_period_start(monkeypatch):
    "The planted bug: open interest stamped at the start of its 5-minute period, before it is published"
    real = H.load_extras
    def early(*a, **kw):
        ex = real(*a, **kw)
        oi = ex["open_interest"]
        ex["open_interest"] = oi.set_axis(oi.index - pd.Timedelta(milliseconds=STATS_LAG))
        return ex
    monkeypatch.setattr(H, "load_extras", early)

@pytest.mark.parametrize("bug", ["open interest before it is published", "1h bars one base bar early"])
def test_stored_check_can_fail(stored, tmp_path, monkeypatch, bug):
    "The stored-data perturbation catches an extras dataset joined before it is public, and an early 1h join"
    if bug.startswith("open"): _oi_at_period_start(monkeypatch)
    else: plant_early_join(monkeypatch, "1h")
    bars, X = stored_features(stored)
    T = cutoffs(X.index, 1.0)["before_1h_close"]
    perturb_raw(stored, tmp_path / "p", T, seed=0)
    with pytest.raises(AssertionError, match=r"lookahead: cut-off .* first (oi|\w+_1h)\b"):
        compare_before(X, stored_features(tmp_path / "p")[1], T)
