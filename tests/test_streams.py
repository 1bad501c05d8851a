"""Real-time streams against the local exchange (a real `SimServer` on a free port, real WebSockets,
real REST), with fault injection. Nothing of futbot.streams is mocked."""
import asyncio, json, math, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from futbot.binance import Rest, WeightLimiter
from futbot.intervals import index_ms
from futbot.history import BAR_COLS, parse
from futbot.sim import SYMBOLS
from futbot.exchange import SimServer
from futbot.vision import fmt_ticks
from futbot.streams import StreamManager, bars_frame, extras_frame

MIN = 60_000


def rest_klines(url, symbol, interval, start, end):
    "REST klines [start, end] (open times, ms) as the typed frame of futbot.history"
    rows = Rest(url).call("klines", symbol=symbol, interval=interval, startTime=int(start), endTime=int(end), limit=1000)
    return parse("klines", rows).set_index("open_time")


def check_bars(url, bars, interval, start, end):
    "Emitted bars [start, end) equal the REST klines exactly: no gap, no duplicate"
    step = int(pd.Timedelta(interval).total_seconds() * 1000)
    got = bars_frame([b for b in bars if b["interval"] == interval and start <= b["open_time"] < end])
    want = rest_klines(url, "BTCUSDT", interval, start, end - step)
    assert len(want) == (end - start) // step
    assert got.index.is_unique, "a bar was emitted twice"
    pd.testing.assert_frame_equal(got[BAR_COLS], want[BAR_COLS], check_exact=True)
    return got


async def run_with_faults(mgr, until, schedule, faults, timeout_s):
    "Run `mgr` until `until(mgr)`; meanwhile apply the (delay_s, fault dict) schedule to the server"
    async def inject():
        t0 = time.monotonic()
        for at, d in schedule:
            await asyncio.sleep(max(0, t0 + at - time.monotonic()))
            faults.update(d)
    inj = asyncio.create_task(inject())
    try: return await mgr.run(duration_s=timeout_s, until=until, handle_signals=False)
    finally:
        inj.cancel(); await asyncio.gather(inj, return_exceptions=True)


# ---------------------------------------------------------------- bars: exact under faults

def test_bars_equal_rest_klines_through_disconnects_stall_and_malformed():
    bars = []
    with SimServer(months=1, speed=300, seed=11, weight_limit=1_000_000) as sim:
        mgr = StreamManager(sim.url, ["BTCUSDT"], ["1m", "5m"], max_streams=4, silence_s=0.6, reorder_s=0.3,
                            max_wait_s=5, backoff_base=0.05, backoff_cap=0.4, oi_poll_s=0.5, on_bar=bars.append)
        assert len(mgr.conns) == 2                               # 7 streams, at most 4 per connection
        first = {}
        def until(m):
            for b in bars: first.setdefault(b["interval"], b["open_time"])
            if "5m" not in first: return False
            end = -(-max(first.values()) // (5 * MIN)) * 5 * MIN + 30 * MIN
            return all(any(b["interval"] == tf and b["open_time"] >= end for b in bars) for tf in ("1m", "5m"))
        schedule = [(0.8, {"ws_malformed": 1}), (1.2, {"ws_drop_all": True}), (2.2, {"ws_drop_all": True}),
                    (3.0, {"ws_stall_s": 1.5}), (5.0, {"ws_drop_all": True})]
        t = time.monotonic()
        st = asyncio.run(run_with_faults(mgr, until, schedule, sim.faults, 40))
        elapsed = time.monotonic() - t
        assert "5m" in first, f"no 5m bar in {elapsed:.1f} s: {st}"
        start = -(-max(first.values()) // (5 * MIN)) * 5 * MIN; end = start + 30 * MIN
        assert st["reconnects"] >= 3 and st["silent"] >= 1 and st["malformed"] >= 1, st
        assert st["rest_bars"] >= 1, st                          # closed bars lost with a connection came back by REST
        assert st["pending_tasks"] == 0
        for tf in ("1m", "5m"):
            allb = [b for b in bars if b["interval"] == tf]
            opens = [b["open_time"] for b in allb]
            assert opens == sorted(set(opens)), f"{tf}: bars out of order or twice"
            assert np.all(np.diff(opens) == pd.Timedelta(tf).total_seconds() * 1000), f"{tf}: a gap"
            got = check_bars(sim.url, bars, tf, start, end)
            # microstructure: the aggTrades of each bar add up to the kline (trade gaps refilled by REST)
            done = got[got.micro_complete]
            assert len(done) >= len(got) - 1, got[["trades", "trade_count", "source"]]
            assert (done.trade_count == done.trades).all()
            np.testing.assert_allclose(done.taker_buy_vol, done.taker_buy_volume, rtol=1e-9)
            np.testing.assert_allclose(done.taker_buy_vol + done.taker_sell_vol, done.volume, rtol=1e-9)
            assert ((done.vwap >= done.low - 1e-9) & (done.vwap <= done.high + 1e-9)).all()


# ---------------------------------------------------------------- the local book

def test_local_book_equals_exchange_book_and_resyncs_on_a_gap():
    with SimServer(months=1, speed=300, seed=7, weight_limit=1_000_000) as sim:
        cps, phase = [], {"p": "clean"}
        def on_book(sym, bk):
            if bk.applied % 2 == 0:
                b, a = bk.top(1000)
                cps.append((phase["p"], sym, bk.last_u, b, a))
        mgr = StreamManager(sim.url, ["BTCUSDT", "ETHUSDT"], [], kinds=("depth",), silence_s=1, reorder_s=0.3,
                            backoff_base=0.05, oi_poll_s=None, on_book=on_book)
        clean = {}
        async def seen(p, n=3, at_least_s=1.2, most_s=8.0):
            "Stay in phase p for at_least_s, and until n book checkpoints of it are in (at most most_s)"
            t0 = time.monotonic()
            while time.monotonic() - t0 < most_s:
                if time.monotonic() - t0 >= at_least_s and sum(c[0] == p for c in cps) >= n: return
                await asyncio.sleep(0.05)
        async def go():
            async def faults():
                await seen("clean")
                clean["resyncs"] = sum(b.resyncs for b in mgr.books.values())
                phase["p"] = "reorder"; sim.faults.update({"ws_reorder": 4})
                await seen("reorder")
                phase["p"] = "drop"; sim.faults.update({"ws_drop_all": True})
                await seen("drop")
                mgr.stop()
            t = asyncio.create_task(faults())
            st = await mgr.run(duration_s=30.0, handle_signals=False)
            await t
            return st
        st = asyncio.run(go())
    assert clean["resyncs"] == 0, "the U/u/pu chain broke without any fault"
    assert st["resyncs"] >= 2 and st["snapshots"] >= 4, st   # reorder -> gap -> resync; drop -> gap -> resync
    assert all(b.synced for b in mgr.books.values())
    for p in ("clean", "reorder", "drop"): assert sum(c[0] == p for c in cps) >= 3, p
    m = sim.market
    for p, sym, u, bids, asks in cps[::2]:
        d = m.depth(sym, u * 100, limit=1000)
        assert d["lastUpdateId"] == u
        pdec, qdec = SYMBOLS[sym]["price_dec"], SYMBOLS[sym]["qty_dec"]
        conv = lambda lv: [(float(fmt_ticks(px, pdec)), float(fmt_ticks(q, qdec))) for px, q in lv]
        assert bids == conv(d["bids"]), (p, sym, u)
        assert asks == conv(d["asks"]), (p, sym, u)


# ---------------------------------------------------------------- connections: split, pings, rotation

def test_split_connections_answer_pings_and_rotate():
    bars = []
    with SimServer(months=1, speed=300, seed=5, weight_limit=1_000_000, ping_s=0.2) as sim:
        mgr = StreamManager(sim.url, ["BTCUSDT"], ["1m"], kinds=("kline", "aggTrade", "bookTicker", "markPrice"),
                            max_streams=2, rotate_s=1.0, ping_s=None, silence_s=2, reorder_s=0.3,
                            backoff_base=0.05, oi_poll_s=None, on_bar=bars.append)
        st = asyncio.run(mgr.run(duration_s=3.5, handle_signals=False))
        assert [len(c.names) for c in mgr.conns] == [2, 2]
        assert st["rotations"] >= 4, st                      # each connection replaced itself at least twice
        assert st["reconnects"] == 0, st                     # the server's pings were answered in time
        assert all(c.messages > 0 for c in mgr.conns)
        assert mgr.latest[("markPriceUpdate", "BTCUSDT")]["s"] == "BTCUSDT"
        assert len(mgr.rings["btcusdt@bookTicker"]) > 0
        opens = [b["open_time"] for b in bars]
        assert len(opens) >= 10
        check_bars(sim.url, bars, "1m", opens[0], opens[-1] + MIN)
        ts = [e[0] for e in mgr.timeline.events]
        assert ts == sorted(ts)


def test_ring_buffers_are_bounded():
    with SimServer(months=1, speed=600, seed=3, weight_limit=1_000_000) as sim:
        mgr = StreamManager(sim.url, ["BTCUSDT"], ["1m"], kinds=("aggTrade", "kline"), ring_size=50, timeline_size=80,
                            oi_poll_s=None, silence_s=2)
        st = asyncio.run(mgr.run(duration_s=1.5, handle_signals=False))
    assert st["messages"] > 200
    assert len(mgr.rings["btcusdt@aggTrade"]) == 50 and len(mgr.timeline.events) == 80


# ---------------------------------------------------------------- live extras under faults

def test_live_extras_need_their_streams():
    with pytest.raises(ValueError, match="depth stream"):
        StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m"], kinds=("kline",), extras=True)
    with pytest.raises(ValueError, match="exchange's clock"):
        StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m"], kinds=("aggTrade",), extras=("mark",))
    with pytest.raises(ValueError, match="unknown live extras"):
        StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m"], extras=("trades",))
    with pytest.raises(ValueError, match="no live extras"):
        StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m"]).extras("BTCUSDT")


def test_live_extras_through_disconnects_and_5xx():
    "Dropped connections and failing REST calls lose no extras row and add none twice; the book rows stay exact"
    with SimServer(months=1, speed=600, seed=3, weight_limit=1_000_000) as sim:
        rest = Rest(sim.url, WeightLimiter(10**6, 60), max_retries=6, backoff_base=0.02, backoff_cap=0.2)
        mgr = StreamManager(sim.url, ["BTCUSDT"], ["1m"], kinds=("kline", "depth", "markPrice"), max_wait_s=0,
                            oi_poll_s=None, silence_s=1, backoff_base=0.05, backoff_cap=0.3, rest=rest,
                            extras=("open_interest", "mark", "book"), extras_retry_s=0.1)
        schedule = [(1.0, {"ws_drop_all": True}), (1.8, {"http_5xx": 4}), (2.6, {"ws_drop_all": True})]
        st = asyncio.run(run_with_faults(mgr, None, schedule, sim.faults, 4.5))
        ex = mgr.extras("BTCUSDT")
        m, oi = ex["mark"], ex["open_interest"]
        o = index_ms(m.index[-60:])
        want_m = extras_frame("mark", rest.call("mark", symbol="BTCUSDT", interval="1m", limit=100,
                                                 startTime=int(o[0]), endTime=int(o[-1])))
        want_oi = extras_frame("open_interest", rest.call("open_interest", symbol="BTCUSDT", period="5m", limit=50,
                                                          startTime=int(index_ms(oi.index[-24:-23])[0]) - 5 * MIN,
                                                          endTime=int(index_ms(oi.index[-1:])[0]) - 5 * MIN))
        closes, market = dict(mgr.books["BTCUSDT"].at_levels), sim.market
    assert st["reconnects"] >= 2 and st["resyncs"] >= 1 and st["pending_tasks"] == 0, st
    assert np.all(np.diff(index_ms(m.index)) == MIN) and np.all(np.diff(index_ms(oi.index)) == 5 * MIN)
    pd.testing.assert_frame_equal(m.iloc[-60:], want_m, check_exact=True)
    pd.testing.assert_frame_equal(oi.iloc[-24:], want_oi, check_exact=True)
    t = min(int(index_ms(m.index[-1:])[0]) + MIN, int(index_ms(oi.index[-1:])[0]))    # the last time both cover
    assert mgr.extras_ready("BTCUSDT", t) and not mgr.extras_ready("BTCUSDT", t + 10 * MIN)
    rows = [(k, v) for k, v in closes.items() if v is not None]
    assert len(rows) >= 20
    pdec, qdec = SYMBOLS["BTCUSDT"]["price_dec"], SYMBOLS["BTCUSDT"]["qty_dec"]
    conv = lambda lv: [(float(fmt_ticks(px, pdec)), float(fmt_ticks(q, qdec))) for px, q in lv[:10]]
    for k, (u, bids, asks) in rows:
        d = market.depth("BTCUSDT", u * 100, limit=100)
        assert u * 100 < k and (bids, asks) == (conv(d["bids"]), conv(d["asks"])), k


# ---------------------------------------------------------------- clean shutdown on signals

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_no_pending_task(sig):
    with SimServer(months=1, speed=120, seed=7, weight_limit=1_000_000) as sim:
        p = subprocess.Popen([sys.executable, "-c", "from futbot.streams import main; import sys; sys.exit(main())",
                              "--exchange", sim.url, "--symbol", "BTCUSDT,ETHUSDT"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err[-2000:]
    st = json.loads(out.strip().splitlines()[-1])
    assert st["messages"] > 0 and st["pending_tasks"] == 0 and st["other_pending_tasks"] == 0, st
