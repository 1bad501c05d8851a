"""The local exchange (`futbot sim`) against real clients: python-binance, aiohttp, subprocesses.
Every server runs on a free port; histories are one month so the whole file runs in well under a minute."""
import asyncio, hashlib, json, os, re, signal, subprocess, sys, time, zipfile
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
import requests

from futbot.sim import Market
from futbot.exchange import SimServer, bench_rest
from futbot.vision import write_vision

SYM = "BTCUSDT"
MIN = 60_000


@pytest.fixture(scope="module")
def sim():
    with SimServer(months=1, speed=60, seed=7, weight_limit=1_000_000) as s:
        yield s


def get(s, path, **params):
    return requests.get(s.url + path, params=params, timeout=60)


def now_ms(s):
    return get(s, "/_sim/clock").json()["now"]


def ws_collect(url, seconds, n=None, on_open=None):
    "Messages (parsed JSON, or the raw text if it is not JSON) received from `url` for `seconds` or until n"
    async def go():
        out = []
        async with aiohttp.ClientSession() as cs:
            async with cs.ws_connect(url) as ws:
                if on_open: await on_open(ws)
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end and (n is None or len(out) < n):
                    try: msg = await asyncio.wait_for(ws.receive(), t_end - time.monotonic())
                    except asyncio.TimeoutError: break
                    if msg.type != aiohttp.WSMsgType.TEXT: out.append(("closed", msg.type)); break
                    try: out.append(json.loads(msg.data))
                    except ValueError: out.append(("text", msg.data))
        return out
    return asyncio.run(go())


# ---------------------------------------------------------------- python-binance, unchanged

def test_python_binance_client_downloads(sim):
    from binance.client import Client
    c = Client(ping=False)
    c.FUTURES_URL = sim.url + "/fapi"
    c.FUTURES_DATA_URL = sim.url + "/futures/data"
    assert c.futures_ping() == {}
    now = c.futures_time()["serverTime"]
    assert abs(now - now_ms(sim)) < 60_000
    info = c.futures_exchange_info()
    assert {d["symbol"] for d in info["symbols"]} == {"BTCUSDT", "ETHUSDT"}
    ks = c.futures_klines(symbol=SYM, interval="1m", limit=100)
    assert len(ks) == 100 and all(len(k) == 12 for k in ks)
    assert [k[0] for k in ks] == list(range(ks[0][0], ks[0][0] + 100 * MIN, MIN))
    assert c.response.headers["X-MBX-USED-WEIGHT-1M"].isdigit()
    start = sim.market.start_ms
    hist = c.futures_historical_klines(SYM, "1h", start, start + 48 * 3_600_000 - 1)
    assert len(hist) == 48 and hist[0][0] == start
    trades = c.futures_aggregate_trades(symbol=SYM, startTime=start + 3_600_000, endTime=start + 2 * 3_600_000 - 1)
    assert trades and all(start + 3_600_000 <= t["T"] < start + 2 * 3_600_000 for t in trades)
    assert [t["a"] for t in trades] == sorted(t["a"] for t in trades)
    fr = c.futures_funding_rate(symbol=SYM, startTime=start, limit=1000)
    times = [f["fundingTime"] for f in fr]
    assert len(fr) >= 90 and set(Decimal(b - a) for a, b in zip(times, times[1:])) == {Decimal(8 * 3_600_000)}
    oi = c.futures_open_interest_hist(symbol=SYM, period="5m", limit=500)
    assert len(oi) == 500 and oi[-1]["timestamp"] - oi[0]["timestamp"] == 499 * 300_000
    assert float(c.futures_open_interest(symbol=SYM)["openInterest"]) > 0
    book = c.futures_order_book(symbol=SYM, limit=100)
    assert len(book["bids"]) == 100 and Decimal(book["bids"][0][0]) < Decimal(book["asks"][0][0])
    assert c.futures_mark_price(symbol=SYM)["symbol"] == SYM
    assert len(c.futures_orderbook_ticker()) == 2
    for fn in (c.futures_global_longshort_ratio, c.futures_taker_longshort_ratio):
        assert len(fn(symbol=SYM, period="1h", limit=10)) == 10
    for fn, kw in ((c.futures_mark_price_klines, {"symbol": SYM}), (c.futures_index_price_klines, {"pair": SYM}),
                   (c.futures_premium_index_klines, {"symbol": SYM})):
        assert len(fn(interval="1h", limit=5, **kw)) == 5


def test_python_binance_error_is_binance_api_exception(sim):
    from binance.client import Client
    from binance.exceptions import BinanceAPIException
    c = Client(ping=False)
    c.FUTURES_URL = sim.url + "/fapi"
    with pytest.raises(BinanceAPIException) as e:
        c.futures_klines(symbol="NOPEUSDT", interval="1m")
    assert (e.value.status_code, e.value.code, e.value.message) == (400, -1121, "Invalid symbol.")


def test_python_binance_socket_manager_streams(sim):
    from binance import AsyncClient, BinanceSocketManager
    async def go():
        client = AsyncClient()
        try:
            bm = BinanceSocketManager(client)
            bm.FSTREAM_URL = sim.url.replace("http", "ws") + "/"
            async with bm.kline_futures_socket(SYM) as ks:
                k = await asyncio.wait_for(ks.recv(), 10)
            async with bm.aggtrade_futures_socket(SYM) as ts:
                t = await asyncio.wait_for(ts.recv(), 10)
            async with bm.futures_multiplex_socket(["btcusdt@kline_1m", "ethusdt@kline_1m"]) as ms:
                got = {(await asyncio.wait_for(ms.recv(), 10))["stream"] for _ in range(6)}
            return k, t, got
        finally:
            await client.close_connection()
    k, t, got = asyncio.run(go())
    assert k["e"] == "continuous_kline" and k["ps"] == SYM and k["k"]["i"] == "1m"
    assert t["stream"] == "btcusdt@aggTrade" and t["data"]["e"] == "aggTrade" and t["data"]["s"] == SYM
    assert got == {"btcusdt@kline_1m", "ethusdt@kline_1m"}


def test_ccxt_binanceusdm_with_only_its_base_urls_changed(sim):
    import ccxt                      # a dev dependency: missing, the run fails rather than skipping
    ex = ccxt.binanceusdm({"options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False}})
    for k, v in list(ex.urls["api"].items()):
        if isinstance(v, str) and v.startswith("https://fapi.binance.com"): ex.urls["api"][k] = v.replace("https://fapi.binance.com", sim.url)
    ex.load_markets()
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(ex.markets)
    o = ex.fetch_ohlcv("BTC/USDT:USDT", "1h", limit=3)
    rest = get(sim, "/fapi/v1/klines", symbol=SYM, interval="1h", startTime=o[0][0], limit=2).json()
    assert [x[:5] for x in o[:2]] == [[r[0], *map(float, r[1:5])] for r in rest]
    assert ex.fetch_order_book("BTC/USDT:USDT", limit=5)["bids"]
    assert len(ex.fetch_trades("BTC/USDT:USDT", limit=3)) == 3


# ---------------------------------------------------------------- consistency of what is served

def _agg_bar(trades):
    p = [Decimal(t["p"]) for t in trades]; q = [Decimal(t["q"]) for t in trades]
    return dict(o=p[0], h=max(p), l=min(p), c=p[-1], v=sum(q), qv=sum(a * b for a, b in zip(p, q)),
                n=sum(t["l"] - t["f"] + 1 for t in trades), tb=sum(b for b, t in zip(q, trades) if not t["m"]),
                tbq=sum(a * b for a, b, t in zip(p, q, trades) if not t["m"]))


def test_rest_klines_equal_aggregated_agg_trades(sim):
    t0 = now_ms(sim) // MIN * MIN - 10 * MIN
    ks = get(sim, "/fapi/v1/klines", symbol=SYM, interval="1m", startTime=t0, limit=5).json()
    trades = get(sim, "/fapi/v1/aggTrades", symbol=SYM, startTime=t0, endTime=t0 + 5 * MIN - 1, limit=1000).json()
    while len(trades) % 1000 == 0 and trades[-1]["T"] < t0 + 5 * MIN:
        more = get(sim, "/fapi/v1/aggTrades", symbol=SYM, fromId=trades[-1]["a"] + 1, limit=1000).json()
        trades += more
    trades = [t for t in trades if t["T"] < t0 + 5 * MIN]
    assert [t["a"] for t in trades] == list(range(trades[0]["a"], trades[0]["a"] + len(trades)))
    for k in ks:
        b = _agg_bar([t for t in trades if k[0] <= t["T"] <= k[6]])
        assert (Decimal(k[1]), Decimal(k[2]), Decimal(k[3]), Decimal(k[4])) == (b["o"], b["h"], b["l"], b["c"])
        assert (Decimal(k[5]), Decimal(k[7]), k[8], Decimal(k[9]), Decimal(k[10])) == (b["v"], b["qv"], b["n"], b["tb"], b["tbq"])


def test_1h_kline_is_aggregation_of_its_1m_klines(sim):
    h0 = now_ms(sim) // 3_600_000 * 3_600_000 - 5 * 3_600_000
    (h,) = get(sim, "/fapi/v1/klines", symbol=SYM, interval="1h", startTime=h0, limit=1).json()
    ms = get(sim, "/fapi/v1/klines", symbol=SYM, interval="1m", startTime=h0, endTime=h0 + 3_600_000 - 1, limit=100).json()
    assert len(ms) == 60 and h[0] == ms[0][0] and h[6] == ms[-1][6]
    D = lambda rows, i: [Decimal(r[i]) for r in rows]
    assert Decimal(h[1]) == D(ms, 1)[0] and Decimal(h[4]) == D(ms, 4)[-1]
    assert Decimal(h[2]) == max(D(ms, 2)) and Decimal(h[3]) == min(D(ms, 3))
    for i in (5, 7, 9, 10): assert Decimal(h[i]) == sum(D(ms, i)), i
    assert h[8] == sum(r[8] for r in ms)


def test_live_closed_klines_equal_rest_klines():
    with SimServer(months=1, speed=1200, seed=3) as fast:       # 20 simulated minutes per second
        msgs = ws_collect(fast.ws_url + "/ws/btcusdt@kline_1m", 2.5)
        closed = [m["k"] for m in msgs if m["k"]["x"]]
        assert len(closed) >= 20
        opens = [k["t"] for k in closed]
        assert opens == list(range(opens[0], opens[0] + len(opens) * MIN, MIN))   # each once, in order
        rest = get(fast, "/fapi/v1/klines", symbol=SYM, interval="1m", startTime=opens[0], limit=len(opens)).json()
    for k, r in zip(closed, rest):
        assert [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"]] == r[:11]


def test_agg_trade_stream_sends_every_trade_once_in_order(sim):
    msgs = ws_collect(sim.ws_url + "/ws/btcusdt@aggTrade", 2.0)
    assert len(msgs) >= 3
    ids = [m["a"] for m in msgs]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    rest = get(sim, "/fapi/v1/aggTrades", symbol=SYM, fromId=ids[0], limit=min(len(ids), 1000)).json()
    assert [{k: m[k] for k in "apqflTm"} for m in msgs[:len(rest)]] == rest


def test_depth_diff_stream_continues_rest_snapshot(sim):
    async def go():
        async with aiohttp.ClientSession() as cs:
            async with cs.ws_connect(sim.ws_url + "/stream?streams=btcusdt@depth@100ms") as ws:
                first = json.loads((await ws.receive(timeout=5)).data)
                async with cs.get(sim.url + "/fapi/v1/depth", params={"symbol": SYM, "limit": "1000"}) as r:
                    snap = await r.json()
                evs = [first["data"]]
                t_end = time.monotonic() + 1.5
                while time.monotonic() < t_end:
                    evs.append(json.loads((await ws.receive(timeout=5)).data)["data"])
                return snap, evs
    snap, evs = asyncio.run(go())
    L = snap["lastUpdateId"]
    evs = [e for e in evs if e["u"] >= L]
    assert evs and evs[0]["U"] <= L <= evs[0]["u"]
    for a, b in zip(evs, evs[1:]): assert b["pu"] == a["u"]
    book = {side: {Decimal(p): Decimal(q) for p, q in snap[side]} for side in ("bids", "asks")}
    for e in evs:
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in e[key]:
                if Decimal(q) == 0: book[side].pop(Decimal(p), None)
                else: book[side][Decimal(p)] = Decimal(q)
    truth = sim.market.depth(SYM, evs[-1]["T"], 20)
    assert truth["lastUpdateId"] == evs[-1]["u"]
    bids = sorted(book["bids"].items(), reverse=True)[:20]; asks = sorted(book["asks"].items())[:20]
    dec = lambda x, n: Decimal(x) / Decimal(10) ** n
    from futbot.sim import SYMBOLS
    pd, qd = SYMBOLS[SYM]["price_dec"], SYMBOLS[SYM]["qty_dec"]
    assert bids == [(dec(p, pd), dec(q, qd)) for p, q in truth["bids"]]
    assert asks == [(dec(p, pd), dec(q, qd)) for p, q in truth["asks"]]


def test_ws_subscribe_unsubscribe_list(sim):
    async def go():
        async with aiohttp.ClientSession() as cs:
            async with cs.ws_connect(sim.ws_url + "/ws") as ws:
                await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m", "ethusdt@bookTicker"], "id": 1})
                got, replies = set(), []
                t_end = time.monotonic() + 3
                while time.monotonic() < t_end and (len(got) < 2 or not replies):
                    m = json.loads((await ws.receive(timeout=5)).data)
                    if "id" in m: replies.append(m)
                    else: got.add(m["e"])
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
                await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m", "ethusdt@bookTicker"], "id": 3})
                await ws.send_json({"method": "SUBSCRIBE", "params": ["nope@nothing"], "id": 4})
                while len(replies) < 4:
                    m = json.loads((await ws.receive(timeout=5)).data)
                    if "id" in m: replies.append(m)
                return got, replies
    got, replies = asyncio.run(go())
    assert got == {"kline", "bookTicker"}
    assert replies[0] == {"result": None, "id": 1}
    assert replies[1] == {"result": ["btcusdt@kline_1m", "ethusdt@bookTicker"], "id": 2}
    assert replies[2] == {"result": None, "id": 3}
    assert replies[3]["id"] == 4 and "error" in replies[3]


def test_other_streams_have_binance_shapes(sim):
    names = ["btcusdt@depth5@100ms", "btcusdt@markPrice@1s", "btcusdt@bookTicker", "btcusdt@depth"]
    msgs = ws_collect(sim.ws_url + "/market/stream?streams=" + "/".join(names), 2.5)
    by = {}
    for m in msgs: by.setdefault(m["stream"], m["data"])
    assert set(by) == set(names)
    assert len(by["btcusdt@depth5@100ms"]["b"]) == 5 and by["btcusdt@depth5@100ms"]["e"] == "depthUpdate"
    assert set(by["btcusdt@markPrice@1s"]) == {"e", "E", "s", "p", "i", "P", "r", "T"}
    assert set(by["btcusdt@bookTicker"]) == {"e", "u", "E", "T", "s", "b", "B", "a", "A"}
    assert {"U", "u", "pu", "b", "a"} <= set(by["btcusdt@depth"])


def test_server_sends_ping_frames(sim):
    async def go():
        with SimServer(market=sim.market, warm=False, ping_s=0.3) as s:
            async with aiohttp.ClientSession() as cs:
                async with cs.ws_connect(s.ws_url + "/ws/btcusdt@markPrice", autoping=False) as ws:
                    t_end = time.monotonic() + 5
                    while time.monotonic() < t_end:
                        msg = await ws.receive(timeout=5)
                        if msg.type == aiohttp.WSMsgType.PING:
                            await ws.pong(msg.data); return True
        return False
    assert asyncio.run(go())


# ---------------------------------------------------------------- Binance's errors, exactly

ERRORS = [
    ("/fapi/v1/klines", dict(symbol="NOPEUSDT", interval="1m"), -1121, "Invalid symbol."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="7m"), -1120, "Invalid interval."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", limit="1501"), -1130, "Data sent for parameter 'limit' is not valid."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", limit="0"), -1130, "Data sent for parameter 'limit' is not valid."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", startTime="2000", endTime="1000"), -1023, "Start time is greater than end time."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", foo="1"), -1104,
     "Not all sent parameters were read; read '2' parameter(s) but was sent '3'."),
    ("/fapi/v1/klines", dict(interval="1m"), -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
    ("/fapi/v1/klines", dict(symbol=SYM), -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", startTime="abc"), -1100,
     "Illegal characters found in parameter 'startTime'; legal range is '^[0-9]{1,20}$'."),
    ("/fapi/v1/klines", dict(symbol=SYM, interval="1m", limit="1.5"), -1100,
     "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'."),
    ("/fapi/v1/indexPriceKlines", dict(symbol=SYM, interval="1m"), -1102,
     "Mandatory parameter 'pair' was not sent, was empty/null, or malformed."),
    ("/fapi/v1/aggTrades", dict(symbol=SYM, startTime="0", endTime="3600001"), -1127, "More than 1 hours between startTime and endTime."),
    ("/fapi/v1/aggTrades", dict(symbol=SYM, fromId="1", startTime="0"), -1128, "Combination of optional parameters invalid."),
    ("/fapi/v1/aggTrades", dict(symbol=SYM, limit="1001"), -1130, "Data sent for parameter 'limit' is not valid."),
    ("/fapi/v1/depth", dict(symbol=SYM, limit="7"), -1130, "Data sent for parameter 'limit' is not valid."),
    ("/fapi/v1/openInterest", dict(symbol="btcusdt"), -1121, "Invalid symbol."),
    ("/futures/data/openInterestHist", dict(symbol=SYM, period="7m"), -1130, "parameter 'period' is invalid."),
    ("/futures/data/openInterestHist", dict(symbol=SYM, period="5m", startTime="1000"), -1130, "parameter 'startTime' is invalid."),
]


@pytest.mark.parametrize("path,params,code,msg", ERRORS, ids=[f"{p.rsplit('/', 1)[1]}{c}-{i}" for i, (p, _, c, _m) in enumerate(ERRORS)])
def test_error_shapes(sim, path, params, code, msg):
    r = get(sim, path, **params)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"code": code, "msg": msg}
    assert r.headers["X-MBX-USED-WEIGHT-1M"].isdigit()


def test_weights_are_binance_weights(sim):
    def w(path, **p):
        before = int(get(sim, "/fapi/v1/ping").headers["X-MBX-USED-WEIGHT-1M"])
        after = int(get(sim, path, **p).headers["X-MBX-USED-WEIGHT-1M"])
        return after - before - 0
    assert w("/fapi/v1/klines", symbol=SYM, interval="1m", limit=99) == 1
    assert w("/fapi/v1/klines", symbol=SYM, interval="1m", limit=499) == 2
    assert w("/fapi/v1/klines", symbol=SYM, interval="1m", limit=1000) == 5
    assert w("/fapi/v1/klines", symbol=SYM, interval="1m", limit=1500) == 10
    assert w("/fapi/v1/aggTrades", symbol=SYM) == 20
    assert w("/fapi/v1/depth", symbol=SYM, limit=1000) == 20
    assert w("/fapi/v1/depth", symbol=SYM) == 10


def test_429_then_418_with_retry_after(sim):
    with SimServer(market=sim.market, warm=False, weight_limit=20, window_s=3.0, ban_after=2, ban_s=2.0) as s:
        while time.time() % 3.0 > 0.3: time.sleep(0.05)      # start at the beginning of a window
        rs = [get(s, "/fapi/v1/klines", symbol=SYM, interval="1m", limit=500) for _ in range(8)]
        codes = [r.status_code for r in rs]
        assert codes == [200, 200, 200, 200, 429, 429, 418, 418], codes
        assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in rs[:5]] == ["5", "10", "15", "20", "20"]
        r429, r418 = rs[4], rs[6]
        assert 1 <= int(r429.headers["Retry-After"]) <= 3
        assert r429.json() == {"code": -1003, "msg": "Too much request weight used; current limit is 20 request weight "
                               "per 3 SECOND. Please use WebSocket Streams for live updates to avoid polling the API."}
        assert r418.json()["code"] == -1003
        assert r418.json()["msg"].startswith("Way too much request weight used; IP banned until ")
        assert r418.json()["msg"].endswith(". Please use WebSocket Streams for live updates to avoid bans.")
        assert int(r418.headers["Retry-After"]) == 2
        time.sleep(3.2)
        assert get(s, "/fapi/v1/ping").status_code == 200


# ---------------------------------------------------------------- fault injection

@pytest.fixture(scope="module")
def fsim(sim):
    with SimServer(market=sim.market, warm=False) as s:      # its own app and faults, the same (warm) market
        yield s


def faults(s, **kw):
    r = requests.post(s.url + "/_sim/faults", json=kw, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_fault_5xx_and_429(fsim):
    assert faults(fsim, http_5xx=2)["http_5xx"] == 2
    rs = [get(fsim, "/fapi/v1/time") for _ in range(3)]
    assert [r.status_code for r in rs] == [503, 503, 200]
    assert rs[0].json() == {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
    faults(fsim, http_429=1)
    r = get(fsim, "/fapi/v1/time")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["code"] == -1003
    assert get(fsim, "/fapi/v1/time").status_code == 200
    assert requests.get(fsim.url + "/_sim/faults").json()["http_429"] == 0
    assert requests.post(fsim.url + "/_sim/faults", json={"nope": 1}).status_code == 400
    c1 = requests.get(fsim.url + "/_sim/clock").json(); time.sleep(0.2); c2 = requests.get(fsim.url + "/_sim/clock").json()
    assert c2["now"] > c1["now"] and c1["speed"] == 60


def test_fault_ws_malformed(fsim):
    async def on_open(ws):
        await ws.receive(timeout=5)
        faults(fsim, ws_malformed=1)
    msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 1.5, on_open=on_open)
    bad = [m for m in msgs if isinstance(m, tuple)]
    assert len(bad) == 1 and bad[0][0] == "text"
    assert len(msgs) - 1 >= 3


def test_fault_ws_stall_keeps_connection_open(fsim):
    stamps = []
    async def on_open(ws):
        await ws.receive(timeout=5)
        faults(fsim, ws_stall_s=1.0)
        t = time.monotonic(); await ws.receive(timeout=5); stamps.append(time.monotonic() - t)
    msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 0.6, on_open=on_open)
    assert stamps[0] >= 0.8 and msgs and not any(isinstance(m, tuple) for m in msgs)


def test_fault_ws_delay(fsim):
    faults(fsim, ws_delay_ms=500)
    try:
        t = time.monotonic()
        msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 3, n=1)
        assert msgs and time.monotonic() - t >= 0.5
    finally:
        faults(fsim, ws_delay_ms=0)


def test_fault_ws_reorder(fsim):
    async def on_open(ws):
        await ws.receive(timeout=5)
        faults(fsim, ws_reorder=4)
    msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 3, n=6, on_open=on_open)
    E = [m["E"] for m in msgs]
    assert any(b < a for a, b in zip(E, E[1:])), E


def test_fault_ws_drop_all_and_next(fsim):
    async def on_open(ws):
        await ws.receive(timeout=5)
        faults(fsim, ws_drop_all=True)
    msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 3, on_open=on_open)
    assert msgs and msgs[-1][0] == "closed"
    faults(fsim, ws_drop_next=1)
    msgs = ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 3)
    assert len(msgs) == 2 and msgs[0]["e"] == "kline" and msgs[1][0] == "closed"
    assert len(ws_collect(fsim.ws_url + "/ws/btcusdt@kline_1m", 1.0)) >= 2      # the next one is fine


def test_clean_shutdown_leaves_no_pending_tasks():
    from futbot.exchange import serve_sim
    m = Market(months=1, speed=60)
    async def go():
        stop, ready = asyncio.Event(), asyncio.Event(); info = {}
        def on_ready(url, app): info["url"] = url; ready.set()
        server = asyncio.create_task(serve_sim("127.0.0.1", 0, m, stop, on_ready))
        await asyncio.wait_for(ready.wait(), 60)
        async with aiohttp.ClientSession() as cs:
            ws = await cs.ws_connect(info["url"].replace("http", "ws") + "/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m/btcusdt@depth@100ms")
            await ws.receive(timeout=30)
            stop.set()
            await asyncio.wait_for(server, 15)
            msg = await ws.receive(timeout=5)
            while msg.type == aiohttp.WSMsgType.TEXT: msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            await ws.close()
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert asyncio.run(go()) == []


# ---------------------------------------------------------------- the process: futbot sim

def _python_sim(*args):
    return [sys.executable, "-c", "from futbot.exchange import main; main()", *args]


def test_sim_process_prints_url_and_exits_0_on_sigterm(sig=signal.SIGTERM):
    p = subprocess.Popen(_python_sim("--port", "0", "--months", "1", "--speed", "60", "--seed", "7"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        assert requests.get(url + "/fapi/v1/ping", timeout=5).json() == {}
        assert requests.get(url + "/api/v3/time", timeout=5).json()["serverTime"] > 0
        from websockets.sync.client import connect
        with connect(url.replace("http", "ws") + "/ws/btcusdt@kline_1m") as ws:   # a client still connected
            assert json.loads(ws.recv(timeout=10))["e"] == "kline"
            p.send_signal(sig)
            assert p.wait(15) == 0
        assert p.wait(15) == 0
    finally:
        if p.poll() is None: p.kill()


def test_futbot_sim_console_script():
    exe = Path(sys.executable).parent / "futbot"
    assert exe.exists(), f"{exe} missing: run make test (it installs the package)"
    p = subprocess.Popen([str(exe), "sim", "--port", "0", "--months", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (url, p.stderr.read() if p.poll() is not None else "")
        assert requests.get(url + "/fapi/v1/ping", timeout=5).status_code == 200
        p.send_signal(signal.SIGINT)
        assert p.wait(15) == 0
    finally:
        if p.poll() is None: p.kill()


def test_sim_bad_arguments_one_line_exit_2_process():
    r = subprocess.run(_python_sim("--port", "0", "--symbols", "DOGEUSDT"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "futbot sim: error: unknown symbol DOGEUSDT in --symbols (known: BTCUSDT, ETHUSDT)\n"


@pytest.mark.parametrize("args,needle", [(["--months", "0"], "--months"), (["--start", "yesterday"], "--start"),
                                         (["--speed", "-1"], "--speed"), (["--bogus"], "--bogus"), (["vision"], "--out"),
                                         (["--faults", '{"nope": 1}'], "nope"), (["vision", "--out", "x", "--datasets", "foo"], "foo")])
def test_sim_bad_arguments_one_line_exit_2(args, needle, capsys):
    from futbot.exchange import run_sim
    try: code = run_sim(["--port", "0", *args])
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("futbot sim: error: ") and needle in err, err


# ---------------------------------------------------------------- bulk archives

def _csv(zpath):
    with zipfile.ZipFile(zpath) as z:
        (name,) = z.namelist()
        assert name == zpath.name[:-4] + ".csv"
        return z.read(name).decode().splitlines()


def test_vision_archives_layout_checksums_and_content(sim, tmp_path):
    m = sim.market
    fs = write_vision(m, tmp_path, [SYM], "2024-01-30", "2024-02-01", intervals=("1m", "1h"))
    rel = {str(f.relative_to(tmp_path)) for f in fs}
    um = "data/futures/um/daily"
    for p in (f"{um}/klines/{SYM}/1m/{SYM}-1m-2024-01-30.zip", f"{um}/klines/{SYM}/1h/{SYM}-1h-2024-01-31.zip",
              f"{um}/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-30.zip", f"{um}/bookTicker/{SYM}/{SYM}-bookTicker-2024-01-30.zip",
              f"{um}/bookDepth/{SYM}/{SYM}-bookDepth-2024-01-30.zip", f"{um}/metrics/{SYM}/{SYM}-metrics-2024-01-30.zip",
              f"{um}/markPriceKlines/{SYM}/1h/{SYM}-1h-2024-01-30.zip", f"{um}/indexPriceKlines/{SYM}/1m/{SYM}-1m-2024-01-31.zip",
              f"{um}/premiumIndexKlines/{SYM}/1h/{SYM}-1h-2024-01-30.zip"):
        assert p in rel, p
    assert not any("fundingRate" in p for p in rel)          # monthly only
    for f in fs:                                              # sha256sum -c format
        digest, name = Path(str(f) + ".CHECKSUM").read_text().split()
        assert name == f.name and digest == hashlib.sha256(f.read_bytes()).hexdigest()
    day = 1706572800000  # 2024-01-30
    k1h = _csv(tmp_path / f"{um}/klines/{SYM}/1h/{SYM}-1h-2024-01-30.zip")
    assert k1h[0].startswith("open_time,open,high") and len(k1h) == 25
    rest = get(sim, "/fapi/v1/klines", symbol=SYM, interval="1h", startTime=day, limit=24).json()
    assert k1h[1:] == [",".join(str(x) for x in r) for r in rest]
    assert len(_csv(tmp_path / f"{um}/klines/{SYM}/1m/{SYM}-1m-2024-01-30.zip")) == 1441
    aggs = _csv(tmp_path / f"{um}/aggTrades/{SYM}/{SYM}-aggTrades-2024-01-30.zip")
    rest = get(sim, "/fapi/v1/aggTrades", symbol=SYM, startTime=day, endTime=day + 3_599_999, limit=1000).json()
    assert aggs[1:len(rest) + 1] == [f"{t['a']},{t['p']},{t['q']},{t['f']},{t['l']},{t['T']},{str(t['m']).lower()}" for t in rest]
    assert len(_csv(tmp_path / f"{um}/metrics/{SYM}/{SYM}-metrics-2024-01-30.zip")) == 289
    if sys.platform.startswith("linux"):
        f = tmp_path / f"{um}/klines/{SYM}/1h/{SYM}-1h-2024-01-30.zip"
        assert subprocess.run(["sha256sum", "-c", f.name + ".CHECKSUM"], cwd=f.parent, capture_output=True).returncode == 0


def test_vision_monthly_and_no_header(sim, tmp_path):
    fs = write_vision(sim.market, tmp_path, [SYM], "2024-01-01", "2024-02-01", ["klines", "fundingRate"], ("1d",), header=False)
    rel = sorted(str(f.relative_to(tmp_path)) for f in fs)
    assert rel == [f"data/futures/um/monthly/fundingRate/{SYM}/{SYM}-fundingRate-2024-01.zip",
                   f"data/futures/um/monthly/klines/{SYM}/1d/{SYM}-1d-2024-01.zip"]
    k = _csv(tmp_path / rel[1]); f = _csv(tmp_path / rel[0])
    assert len(k) == 31 and k[0].startswith("1704067200000,")
    rest = get(sim, "/fapi/v1/fundingRate", symbol=SYM, startTime=1704067200000, endTime=1706745600000 - 1, limit=1000).json()
    assert len(f) in (92, 93) and f == [f"{r['fundingTime']},8,{r['fundingRate']}" for r in rest]


def test_vision_cli(tmp_path):
    r = subprocess.run(_python_sim("vision", "--out", str(tmp_path), "--months", "1", "--start", "2024-01-01",
                                   "--end", "2024-01-02", "--datasets", "klines,fundingRate,metrics", "--intervals", "1h"),
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-01-01.zip.CHECKSUM").exists()


# ---------------------------------------------------------------- benchmark hook

def test_bench_rest_reports_requests_per_second(sim):
    assert bench_rest(n=200, url=sim.url) > 10


# ---------------------------------------------------------------- where the data came from: /_sim/info

def test_sim_info_describes_the_market(sim):
    "GET /_sim/info: the market's seed, alpha knobs and name, start, months, symbols; enough to rebuild it"
    from futbot.sim import ALPHA_DEFAULT
    r = get(sim, "/_sim/info")
    info = r.json()
    assert r.status_code == 200 and "X-MBX-USED-WEIGHT-1M" not in r.headers   # admin path: no weight charged
    assert info == {"seed": 7, "alpha": ALPHA_DEFAULT, "alpha_name": "default", "start": "2024-01-01T00:00:00Z",
                    "months": 1, "symbols": ["BTCUSDT", "ETHUSDT"]}
    m = Market.from_info(info, symbols=[SYM], clock=sim.market.now_ms)   # the same market, on the same clock
    t = now_ms(sim) // MIN * MIN - 10 * MIN
    mine, served = (x.klines(SYM, "1m", t, t + 4 * MIN, 5) for x in (m, sim.market))
    assert mine.keys() == served.keys() and all((mine[k] == served[k]).all() for k in mine)


def test_sim_info_of_a_martingale_process():
    p = subprocess.Popen(_python_sim("--port", "0", "--months", "1", "--seed", "11", "--alpha", "none",
                                     "--symbols", "ETHUSDT"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = p.stdout.readline().strip()
        info = requests.get(url + "/_sim/info", timeout=5).json()
        assert (info["seed"], info["alpha_name"], info["symbols"], info["months"]) == (11, "none", ["ETHUSDT"], 1)
        assert set(info["alpha"].values()) == {0.0}
        assert requests.get(url + "/_sim/nope", timeout=5).status_code == 404
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(15)
