"""Live extras end to end: a real `futbot sim` process at 600x, `StreamManager(extras=True)` for about a simulated
hour (crossing the 08:00 funding), then `futbot.history.download` of the same period. The live frames equal
`load_extras`, every frame a decision at `t` saw holds exactly the rows published <= t, and `LiveFeatures` rows
built from them equal `build_features` on the download.

What is compared how:
- funding, open_interest, mark, index: exactly, row for row (both sides are Binance's published series).
- book: the exchange keeps no book history, so the download's snapshots (taken while it ran) and the live rows
  (the local book at each minute boundary) are samples at different update ids. Each is compared with the
  exchange's book at its own update id, from a replica of the seeded market (same seed, start, months); the
  batch `book` frame is that replica at the live rows' update ids.
"""
import asyncio, sys, time
import numpy as np, pandas as pd, pytest

from conftest import run_sim
from futbot.binance import Rest, WeightLimiter
from futbot.features import LiveFeatures, build_features, extras_features
from futbot.history import download, load_bars, load_extras
from futbot.intervals import MINUTE_MS, HOUR_MS, DAY_MS, index_ms, interval_ms, ms_index, to_ms
from futbot.sim import Market, SYMBOLS
from futbot.streams import StreamManager, book_frame
from futbot.vision import fmt_ticks

SYM, SEED, START, SPEED = "BTCUSDT", 7, "2024-01-01T07:15", 600   # the simulated now starts at 2024-02-01 07:15
FUNDING_T = to_ms("2024-02-01T08:00")                               # a funding time inside the run
STOP_T = FUNDING_T + 20 * MINUTE_MS                                 # the last decision time needed
TFS = ["1m", "5m", "1h"]
CFG = {"data.timeframes": TFS, "data.base_timeframe": "1m"}          # a decision every minute
RUN_TIMEOUT_S, WAIT_S = 40, 5
SHIFT = {"open_interest": 5 * MINUTE_MS, "mark": MINUTE_MS, "index": MINUTE_MS, "book": MINUTE_MS,   # one interval
         "funding": 8 * HOUR_MS}


def stamps(ds, df):
    "When each row became public (ms): klines at their close"
    return index_ms(df.index) + (MINUTE_MS if ds in ("mark", "index") else 0)


def upto(ds, df, t):
    "The rows of `df` published at or before t"
    return df[stamps(ds, df) <= t]


async def stream_decisions(mgr):
    "Run `mgr`; at each closed 1m bar (decision time t) wait for the extras of t, then keep what `extras(t)` gives"
    q, snaps = [], {}
    mgr.on_bar = lambda b: q.append(b["close_time"] + 1)
    async def consume():
        while not mgr.stopping:
            while q:
                t = q.pop(0)
                ok = await mgr.wait_extras(SYM, t, WAIT_S)
                if not ok and mgr.stopping: return          # stopped while waiting: no decision
                snaps[t] = (ok, mgr.extras(SYM, t))
            await asyncio.sleep(0.005)
    c = asyncio.create_task(consume())
    st = await mgr.run(duration_s=RUN_TIMEOUT_S, until=lambda m: any(t >= STOP_T for t in snaps), handle_signals=False)
    await asyncio.gather(c, return_exceptions=True)
    return st, snaps


def replica_book(m, closes):
    "The exchange's top 10 levels at each update id, as `LocalBook.at_levels` holds them: {k: (u, bids, asks)}"
    pdec, qdec = SYMBOLS[SYM]["price_dec"], SYMBOLS[SYM]["qty_dec"]
    conv = lambda lv: [(float(fmt_ticks(p, pdec)), float(fmt_ticks(q, qdec))) for p, q in lv[:10]]
    out = {}
    for k, v in closes.items():
        if v is None: continue
        d = m.depth(SYM, v[0] * 100, limit=100)
        assert d["lastUpdateId"] == v[0]
        out[k] = (v[0], conv(d["bids"]), conv(d["asks"]))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "One streamed hour with live extras, the download of the same period, and the batch side to compare with"
    data = tmp_path_factory.mktemp("data")
    t0 = time.monotonic()
    with run_sim("--symbols", SYM, "--weight-limit", "1000000", months=1, start=START, seed=SEED, speed=SPEED) as url:
        rest = Rest(url, WeightLimiter(10**6, 60))
        mgr = StreamManager(url, [SYM], ["1m"], kinds=("kline", "depth", "markPrice"), max_wait_s=0, oi_poll_s=None,
                            extras=True, extras_retry_s=0.1, rest=rest)
        st, snaps = asyncio.run(stream_decisions(mgr))
        t_run = time.monotonic() - t0
        first = min(snaps)
        download(SYM, ["klines"], TFS, start=START, exchange=url, data_dir=data, progress=False, rest=rest)
        download(SYM, ["mark", "index", "funding", "open_interest", "book"], TFS, start=first - 3 * DAY_MS,
                 exchange=url, data_dir=data, progress=False, rest=rest, book_every_s=0.05)
    t_dl = time.monotonic() - t0 - t_run
    bars = {tf: load_bars(SYM, tf, data_dir=data) for tf in TFS}
    dl = load_extras(SYM, data_dir=data)
    rep = Market([SYM], SEED, START, months=1, clock=lambda: STOP_T + DAY_MS)
    live_closes = dict(mgr.books[SYM].at_levels)
    ref_book = book_frame(replica_book(rep, live_closes))
    batch = {**{k: v for k, v in dl.items() if k != "book"}, "book": ref_book}
    print(f"run {t_run:.1f} s, download {t_dl:.1f} s, {len(snaps)} decisions, stats {st}", file=sys.stderr)
    return dict(mgr=mgr, st=st, snaps=snaps, bars=bars, dl=dl, batch=batch, rep=rep, live_closes=live_closes)


def check_snapshots(snaps, batch):
    "Each frame seen at t holds exactly the batch rows published <= t over the span it keeps"
    for t, (_, ex) in snaps.items():
        for ds, ref in batch.items():
            want = upto(ds, ref, t)
            if ds not in ex:
                assert not len(want), (ds, t)       # e.g. the book before the local book first synced
                continue
            want = want[want.index >= ex[ds].index[0]]
            pd.testing.assert_frame_equal(ex[ds], want, check_exact=True, obj=f"{ds} at {ms_index([t])[0]}")


def live_rows(bars, snaps):
    "LiveFeatures rows, one per decision time, fed the bars closed by then and the extras seen then"
    lf = LiveFeatures(config=CFG, grid=("1m", TFS))
    close = {tf: index_ms(b.index) + interval_ms(tf) for tf, b in bars.items()}
    fed, rows = {tf: 0 for tf in bars}, []
    for t in sorted(snaps):
        for tf, b in bars.items():
            k = int(np.searchsorted(close[tf], t, side="right"))
            if k > fed[tf]:
                lf.add_bars(tf, b.iloc[max(fed[tf], k - lf.buffer):k])
                fed[tf] = k
        rows.append(lf.row(ms_index([t], "t")[0], snaps[t][1]))
    return pd.concat(rows)


def check_rows(live, batch_rows, ex_cols):
    "Extras columns exactly equal; the bar columns to float round-off"
    pd.testing.assert_frame_equal(live[ex_cols], batch_rows[ex_cols], check_exact=True)
    pd.testing.assert_frame_equal(live, batch_rows[live.columns], check_exact=False, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def rows(run):
    "Live rows and the batch rows of the same decision times"
    live = live_rows(run["bars"], run["snaps"])
    bx = build_features(run["bars"], run["batch"], config=CFG, drop_warmup=False)
    names = extras_features(run["batch"], index_ms(live.index[-1:]), MINUTE_MS, np.ones(1), np.ones(1))
    return live, bx.loc[live.index], [c for c in live.columns if c in names]


# ---------------------------------------------------------------- the frames

def test_run_covers_an_hour_and_a_funding_time(run):
    ts = sorted(run["snaps"])
    assert len(ts) >= 50 and ts[-1] - ts[0] >= HOUR_MS - 10 * MINUTE_MS, (len(ts), ms_index(ts[:1]), ms_index(ts[-1:]))
    assert ts[0] < FUNDING_T <= ts[-1]
    assert all(ok for ok, _ in run["snaps"].values()), "a decision timed out waiting for its extras"
    assert run["st"]["rest_errors"] == 0 and run["st"]["pending_tasks"] == 0, run["st"]
    seen = {t: int(index_ms(ex["funding"].index[-1:])[0]) for t, (_, ex) in run["snaps"].items()}
    assert all((seen[t] == FUNDING_T) == (t >= FUNDING_T) for t in ts), "the 08:00 funding was seen early or late"


@pytest.mark.parametrize("ds", ["funding", "open_interest", "mark", "index"])
def test_live_frames_equal_the_download(run, ds):
    live, dl = run["mgr"].extras(SYM)[ds], run["dl"][ds]
    lo, hi = max(live.index[0], dl.index[0]), min(live.index[-1], dl.index[-1])
    assert hi - lo >= pd.Timedelta("1D") and hi >= ms_index([max(run["snaps"])])[0] - pd.Timedelta("8h")
    a, b = live.loc[lo:hi], dl.loc[lo:hi]
    assert len(a) > 1 and list(a.columns) == list(dl.columns) and a.index.name == dl.index.name
    assert (a.dtypes == dl.dtypes).all() and a.index.dtype == dl.index.dtype
    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_live_book_is_the_exchange_book_at_its_update_id(run):
    live = run["mgr"].extras(SYM)["book"]
    assert len(live) >= 50 and list(live.columns) == list(run["dl"]["book"].columns)
    assert (live.dtypes == run["dl"]["book"].dtypes).all() and live.index.dtype == run["dl"]["book"].index.dtype
    pd.testing.assert_frame_equal(live, run["batch"]["book"], check_exact=True)
    # the download's snapshots are the same function at their own update ids (this checks the replica too)
    dl = run["dl"]["book"]
    at = {int(k): (int(k) // 100, None, None) for k in index_ms(dl.index)}
    ref = book_frame(replica_book(run["rep"], at))
    assert len(dl) >= 1          # snapshots every 0.05 s while the download runs: how many depends on its speed
    pd.testing.assert_frame_equal(dl, ref, check_exact=True)


def test_each_decision_saw_exactly_what_was_published_by_then(run):
    check_snapshots(run["snaps"], run["batch"])


# ---------------------------------------------------------------- the features

def test_live_feature_rows_equal_batch(rows):
    live, batch, ex_cols = rows
    want = {"funding_rate", "funding_chg", "oi", "oi_chg_12", "oi_pct_12", "mark_dev", "basis", "mark_index_dev",
            "spread", "imbalance_10", "depth_bid"}
    assert want <= set(live.columns), want - set(live.columns)
    assert live[sorted(want)].iloc[-20:].notna().all().all()
    assert len(live) >= 50
    check_rows(live, batch, ex_cols)


# ---------------------------------------------------------------- planted bugs: the checks above are sharp

def early(run, ds):
    "The decisions' extras as a LiveExtras that stamps `ds` one interval early would have given them"
    full = run["mgr"].extras(SYM)[ds].copy()
    full.index = full.index - pd.Timedelta(milliseconds=SHIFT[ds])
    out = {}
    for t, (ok, ex) in run["snaps"].items():
        ex = dict(ex)
        lo = ex[ds].index[0] - pd.Timedelta(milliseconds=SHIFT[ds]) if ds in ex else full.index[0]
        cut = upto(ds, full, t)
        ex[ds] = cut[cut.index >= lo]
        if not len(ex[ds]): del ex[ds]                   # as `extras()`: no empty frames
        out[t] = (ok, ex)
    return out


@pytest.mark.parametrize("ds", ["open_interest", "mark", "index", "book", "funding"])
def test_an_early_stamp_is_caught(run, rows, ds):
    bad = early(run, ds)
    with pytest.raises(AssertionError): check_snapshots(bad, run["batch"])
    if ds == "funding": return      # the simulated rate sits at the 0.01% clamp: only the frame check sees it
    with pytest.raises(AssertionError): check_rows(live_rows(run["bars"], bad), rows[1], rows[2])


def stale(run, ds):
    "The decisions' extras as a manager that did not wait for the rows of `ds` published at t itself would give them"
    out = {}
    for t, (ok, ex) in run["snaps"].items():
        ex = dict(ex)
        if ds in ex: ex[ds] = ex[ds][stamps(ds, ex[ds]) < t]
        if ds in ex and not len(ex[ds]): del ex[ds]
        out[t] = (ok, ex)
    return out


@pytest.mark.parametrize("ds", ["open_interest", "mark", "index", "book", "funding"])
def test_a_decision_that_did_not_wait_is_caught(run, rows, ds):
    bad = stale(run, ds)
    with pytest.raises(AssertionError): check_snapshots(bad, run["batch"])
    if ds in ("mark", "book"):
        with pytest.raises(AssertionError): check_rows(live_rows(run["bars"], bad), rows[1], rows[2])
