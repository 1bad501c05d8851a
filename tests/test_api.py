"""The signal API's guards on a real port (issue 13): bearer tokens over HTTP and WebSocket (401, close 1008), one-line
400s for malformed parameters, 429 with Retry-After per token and per address while others are served, and Debian's
Prometheus server scraping /metrics and answering for the latency histogram through its own query API."""
import asyncio, json
import aiohttp
import pytest
from aiohttp import web, WSMsgType
from conftest import prometheus_scraping, prometheus_query
from futbot.api import (TOKENS_ENV, TOKEN_KEY, Metrics, RateLimiter, api_app, api_tokens, known_params,
                        parse_limit, parse_since, query_param, served_symbol, serving, websocket_response)
from futbot.config import ConfigError
from futbot.intervals import to_ms

TOKENS = ["alpha-token-0123456789abcdef", "bravo-token-0123456789abcdef"]
WRONG = "wrong-token-0123456789abcdef"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SIGNALS = [{"signal_id": f"s{i}", "timestamp": f"2024-03-01T1{i}:00:00Z", "symbol": SYMBOLS[i % 2], "side": "long"}
           for i in range(4)]
WAIT_S = 5   # longest a client waits for one answer
WS_RUNS = web.AppKey("ws_runs", list)   # token_id of each /ws/signals handler run

async def signals(request):
    known_params(request, ("since", "limit", "symbol"))
    since = query_param(request, "since", parse_since, -1)
    limit = query_param(request, "limit", parse_limit, 100)
    sym = query_param(request, "symbol", served_symbol(SYMBOLS))
    rows = [s for s in SIGNALS if to_ms(s["timestamp"]) > since and sym in (None, s["symbol"])]
    return web.json_response(rows[:limit])

async def ws_signals(request):
    request.app[WS_RUNS].append(request[TOKEN_KEY])
    ws = websocket_response()
    await ws.prepare(request)
    for s in SIGNALS: await ws.send_json(s)
    await ws.close()
    return ws

async def health(request): return web.json_response({"status": "ok"})

async def boom(request): raise RuntimeError("internal detail /etc/secret")

def make_app(limiter:RateLimiter|None=None, metrics:Metrics|None=None)->web.Application:
    "The API as the service assembles it: protected /signals and /ws/signals, open /health and /metrics"
    app = api_app(api_tokens({TOKENS_ENV: ",".join(TOKENS)}), limiter or RateLimiter(1000, 1000),
                  metrics or Metrics(process=False))
    app[WS_RUNS] = []
    for path, h in (("/signals", signals), ("/ws/signals", ws_signals), ("/health", health), ("/boom", boom)):
        app.router.add_get(path, h)
    return app

async def get(url:str, path:str, token:str|None=None, src:str="127.0.0.1", headers:dict|None=None)->tuple:
    "GET `path` from source address `src` over a new connection: status, headers, body"
    h = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(src, 0))) as s:
        async with s.get(url + path, headers=h, timeout=aiohttp.ClientTimeout(total=WAIT_S)) as r:
            return r.status, r.headers, await r.text()

def run(coro): return asyncio.run(coro)

def one_line_error(status:int, headers, body:str)->str:
    "The message of a one-line JSON error answer (and nothing else in it)"
    assert headers["Content-Type"].startswith("application/json"), headers
    assert "\n" not in body and "Traceback" not in body and "signal_id" not in body, body
    d = json.loads(body)
    assert list(d) == ["error"] and isinstance(d["error"], str), d
    return d["error"]

def test_no_token_or_wrong_token_gets_401_and_no_data():
    async def go():
        async with serving(make_app()) as url:
            for tok, path, extra in ((None, "/signals", {}), (WRONG, "/signals", {}), (None, "/signals?since=abc", {}),
                                     (None, f"/signals?token={TOKENS[0]}", {}), (WRONG, "/nope", {}),
                                     (None, "/signals", {"Authorization": f"Basic {TOKENS[0]}"})):
                st, h, body = await get(url, path, tok, headers=extra)
                assert st == 401, (tok, path, st, body)
                assert h["WWW-Authenticate"].startswith("Bearer"), h
                assert "bearer token" in one_line_error(st, h, body)
            for path in ("/health", "/metrics"):
                assert (await get(url, path))[0] == 200, path
    run(go())

def test_either_token_gets_signals_over_http_and_websocket():
    async def go():
        app = make_app()
        async with serving(app) as url, aiohttp.ClientSession() as s:
            for tok in TOKENS:
                st, _, body = await get(url, "/signals", tok)
                assert st == 200 and [x["signal_id"] for x in json.loads(body)] == ["s0", "s1", "s2", "s3"]
                how = ({"headers": {"Authorization": f"Bearer {tok}"}}, {"protocols": ("bearer", tok)})
                for kw in how:
                    async with s.ws_connect(url + "/ws/signals", **kw) as ws:
                        got = [json.loads(m.data) async for m in ws if m.type == WSMsgType.TEXT]
                    assert [x["signal_id"] for x in got] == ["s0", "s1", "s2", "s3"], kw
            assert len(app[WS_RUNS]) == 4 and len(set(app[WS_RUNS])) == 2    # by token_id, never the token
            assert not set(app[WS_RUNS]) & set(TOKENS)
    run(go())

def test_websocket_with_bad_token_is_closed_1008_before_any_message():
    async def go():
        app = make_app()
        async with serving(app) as url, aiohttp.ClientSession() as s:
            tries = ({}, {"headers": {"Authorization": f"Bearer {WRONG}"}}, {"protocols": ("bearer", WRONG)},
                     {"protocols": ("bearer",)}, {"params": {"token": TOKENS[0]}})   # never from the URL
            for kw in tries:
                async with s.ws_connect(url + "/ws/signals", **kw) as ws:
                    msg = await ws.receive(timeout=WAIT_S)
                    assert msg.type == WSMsgType.CLOSE and msg.data == 1008, (kw, msg)
                    assert ws.close_code == 1008
                    assert (await ws.receive(timeout=WAIT_S)).type == WSMsgType.CLOSED
            assert app[WS_RUNS] == []                                                # the handler never ran
    run(go())

BAD_PARAMS = {   # query -> the start of the error line
    "since=abc": "since: not an ISO time or epoch ms: 'abc'",
    "since=-1": "since: before 1970",
    "since=99999999999999": "since: after 2100-01-01",
    "since=2024-13-01T00:00:00Z": "since: not an ISO time or epoch ms",
    "since=now": "since: not an ISO time or epoch ms: 'now'",
    "since=1e12": "since: not an ISO time or epoch ms",
    "since=%00": "since: not an ISO time or epoch ms",
    "since=" + "9" * 5000: "since: not an ISO time or epoch ms",
    "since=1&since=2": "since: given 2 times",
    "limit=0": "limit: must be in 1..1000, got 0",
    "limit=1001": "limit: must be in 1..1000",
    "limit=-5": "limit: must be in 1..1000",
    "limit=ten": "limit: not a whole number: 'ten'",
    "limit=2.5": "limit: not a whole number",
    "symbol=BTC/USDT": "symbol: not a symbol",
    "symbol=XRPUSDT": "symbol: not served here: 'XRPUSDT'",
    "sinse=1": "unknown parameter 'sinse' (did you mean since?)",
}

def test_malformed_parameters_get_a_400_line_never_a_500():
    async def go():
        async with serving(make_app()) as url:
            for q, start in BAD_PARAMS.items():
                st, h, body = await get(url, "/signals?" + q, TOKENS[0])
                assert st == 400, (q, st, body)
                msg = one_line_error(st, h, body)
                assert msg.startswith(start) and len(msg) < 200, (q, msg)
            good = {"since=2024-03-01T11:00:00Z&limit=1": ["s2"], "since=1709287200000&symbol=ethusdt": ["s1", "s3"],
                    "since=2024-03-01T12:00:00+00:00": ["s3"], "since=&limit=": ["s0", "s1", "s2", "s3"]}
            for q, ids in good.items():
                st, _, body = await get(url, "/signals?" + q, TOKENS[1])
                assert st == 200 and [x["signal_id"] for x in json.loads(body)] == ids, (q, body)
            st, h, body = await get(url, "/boom", TOKENS[0])
            assert st == 500 and one_line_error(st, h, body) == "internal error (logged)" and "secret" not in body
    run(go())

def test_client_over_its_rate_gets_429_while_others_are_served():
    "Buckets per token and per address: A floods from 127.0.0.1; B (other token, 127.0.0.2) is served throughout"
    async def go():
        async with serving(make_app(RateLimiter(rate_per_s=0.1, burst=5))) as url:
            a, b = [], []
            for i in range(15):
                a.append(await get(url, "/signals", TOKENS[0], "127.0.0.1"))
                if i % 3 == 0: b.append((await get(url, "/signals", TOKENS[1], "127.0.0.2"))[0])
            assert [x[0] for x in a[:5]] == [200] * 5 and b == [200] * 5, ([x[0] for x in a], b)
            for st, h, body in a[6:]:
                assert st == 429 and int(h["Retry-After"]) >= 1, (st, dict(h))
                assert one_line_error(st, h, body).startswith("rate limit:")
            # A's token is empty from any address, A's address is empty for any token; X-Forwarded-For is not trusted
            assert (await get(url, "/signals", TOKENS[0], "127.0.0.3"))[0] == 429
            assert (await get(url, "/signals", TOKENS[1], "127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}))[0] == 429
            assert (await get(url, "/health", None, "127.0.0.1"))[0] == 200                  # monitors still answered
    run(go())

def test_retry_after_is_honest():
    "Waiting Retry-After seconds is enough, a second less is not"
    now = [100.0]
    rl = RateLimiter(rate_per_s=0.3, burst=2, clock=lambda: now[0])
    assert [rl.take("addr:a", "token:t") for _ in range(2)] == [0, 0]
    wait = rl.take("addr:b", "token:t")
    assert wait == 4                                 # ceil(1 / 0.3)
    now[0] += wait - 1
    assert rl.take("addr:b", "token:t") >= 1
    now[0] += 1
    assert rl.take("addr:b", "token:t") == 0

def test_rate_limiter_stays_bounded():
    now = [0.0]
    rl = RateLimiter(rate_per_s=10, burst=5, max_keys=50, clock=lambda: now[0])
    for i in range(5000): rl.take(f"addr:{i}", f"token:{i}")
    assert len(rl.buckets) == 50
    now[0] += 1.0                                  # every bucket refilled: all forgotten on the next charge
    rl.take("addr:x")
    assert list(rl.buckets) == ["addr:x"]

def test_tokens_come_from_the_environment_with_one_line_errors():
    assert api_tokens({TOKENS_ENV: ",".join(TOKENS)}) == TOKENS
    for env in ({}, {TOKENS_ENV: ""}, {TOKENS_ENV: "short"}, {TOKENS_ENV: f"{TOKENS[0]},has space in it 0123456"}):
        with pytest.raises(ConfigError) as e: api_tokens(env)
        assert "\n" not in str(e.value) and TOKENS_ENV in str(e.value) and TOKENS[0] not in str(e.value)

# --- a real Prometheus server -------------------------------------------------------------------------------------
SCRAPED_S = 30      # longest a value may take to show up in a query

async def until_value(prom:str, q:str, want:float)->list:
    "Poll `q` until its one series has the value `want` (the served app answers scrapes in between)"
    for _ in range(SCRAPED_S * 4):
        res = prometheus_query(prom, q)
        if res and float(res[0]["value"][1]) == want: return res
        await asyncio.sleep(0.25)
    raise AssertionError(f"{q} never reached {want}: {res}")

def test_prometheus_scrapes_metrics_and_returns_the_latency_histogram():
    async def go():
        m = Metrics()
        m.set_model("BTCUSDT", "lgbm-BTCUSDT", "7")
        for _ in range(10): m.signal_latency.observe(0.004)
        async with serving(make_app(metrics=m)) as url:
            with prometheus_scraping(url[7:]) as prom:
                await until_value(prom, "futbot_signal_latency_seconds_count", 10)
                for _ in range(50): m.signal_latency.observe(0.03)       # between the 25 ms and 50 ms edges
                await until_value(prom, "futbot_signal_latency_seconds_count", 60)
                b = prometheus_query(prom, 'futbot_signal_latency_seconds_bucket{le="0.025"}')
                c = prometheus_query(prom, 'futbot_signal_latency_seconds_bucket{le="0.05"}')
                assert (float(b[0]["value"][1]), float(c[0]["value"][1])) == (10, 60)
                q99 = prometheus_query(prom, "histogram_quantile(0.99, rate(futbot_signal_latency_seconds_bucket[10s]))")
                assert 0.025 < float(q99[0]["value"][1]) <= 0.05, q99
                info = prometheus_query(prom, "futbot_model_info")
                assert [(x["metric"]["symbol"], x["metric"]["version"]) for x in info] == [("BTCUSDT", "7")]
                assert prometheus_query(prom, 'up{job="futbot"}')[0]["value"][1] == "1"
    run(go())
