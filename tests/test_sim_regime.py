"""Regime changes in the local exchange (issue 14): `futbot sim --regime-schedule` and `POST /_sim/regime`.
The history before a change stays bit-for-bit as it was; after it the market runs in the new regime."""
import json, subprocess, time, urllib.error, urllib.request
import numpy as np
import pytest
from conftest import BIN, ROOT, run_sim, http_json
from futbot.intervals import MINUTE_MS, HOUR_MS, DAY_MS, to_ms, bar_opens
from futbot.sim import Market

CHANGE = "2024-02-10T00:00"          # inside the 2-month history of the shared `sim_url` exchange (seed 7)
T = to_ms(CHANGE)
SCHEDULE = f"{CHANGE}=alpha:none,vol:2.0"


@pytest.fixture(scope="module")
def sched_url():
    "The shared exchange's market (2 months, seed 7) with a scheduled change to alpha none and twice the volatility"
    with run_sim("--regime-schedule", SCHEDULE) as url: yield url


def klines(url, interval, start, limit=1500, symbol="BTCUSDT"):
    "REST klines as a list of rows"
    return http_json(f"{url}/fapi/v1/klines?symbol={symbol}&interval={interval}&startTime={start}&limit={limit}")[0]


def klines_1m(url, lo, hi):
    "Every 1m kline with lo <= open < hi (several requests)"
    out = []
    while lo < hi:
        rows = [r for r in klines(url, "1m", lo) if r[0] < hi]
        out += rows
        lo = rows[-1][0] + MINUTE_MS
    return out


def post(url, body):
    "POST a body (bytes, or an object sent as JSON) to the regime control: (status, answer text)"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/_sim/regime", data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()


def rv(rows):
    "Realised 1m volatility: sd of the log close-to-close returns"
    return float(np.diff(np.log([float(r[4]) for r in rows])).std())


@pytest.mark.parametrize("interval", ["1m", "5m"])
def test_klines_before_the_change_identical(sim_url, sched_url, interval):
    n = 1500 if interval == "1m" else 1440                       # bars either side of the change ...
    start = T - n // 2 * (MINUTE_MS if interval == "1m" else 5 * MINUTE_MS)
    a, b = klines(sim_url, interval, start, n), klines(sched_url, interval, start, n)
    assert len(a) == len(b) == n and a[0][0] == start
    before = [i for i, r in enumerate(a) if r[0] < T]
    assert len(before) == n // 2
    assert [a[i] for i in before] == [b[i] for i in before]      # every field of every bar before it
    assert sum(a[i] != b[i] for i in range(len(before), n)) > 0.95 * (n - len(before))


def test_funding_before_the_change_identical(sim_url, sched_url):
    q = "/fapi/v1/fundingRate?symbol=BTCUSDT&startTime=0&limit=1000"
    a, b = http_json(sim_url + q)[0], http_json(sched_url + q)[0]
    n = min(len(a), len(b))                 # the two sims' clocks differ a little: one may have published one more
    assert n > 100 and abs(len(a) - len(b)) <= 1
    a, b = a[:n], b[:n]
    assert [r for r in a if r["fundingTime"] <= T] == [r for r in b if r["fundingTime"] <= T]
    after = [(x, y) for x, y in zip(a, b) if x["fundingTime"] > T]
    assert after and all(x["markPrice"] != y["markPrice"] for x, y in after)   # another price path from T on


def test_realised_vol_doubles(sim_url, sched_url):
    "Three days either side: before, the same market; after, about twice the 1m volatility"
    days = 3 * DAY_MS
    pb, sb = klines_1m(sim_url, T - days, T), klines_1m(sched_url, T - days, T)
    pa, sa = klines_1m(sim_url, T, T + days), klines_1m(sched_url, T, T + days)
    assert pb == sb and len(sa) == len(pa) == 3 * 1440
    same_days = rv(sa) / rv(pa)                  # the latent sigma is exactly doubled; ticks and bridges add noise
    assert 1.8 < same_days < 2.2, same_days
    before_after = rv(sa) / rv(sb)               # vol clusters, so a plain after/before ratio moves with the seed:
    natural = rv(pa) / rv(pb)                    # judged against the unchanged market's own ratio
    assert 1.6 < before_after / natural < 2.5, (before_after, natural)


def test_oracle_follows_the_regime(sim_url, sched_url):
    "From /_sim/info: the oracle before the change is the unchanged market's, after it the no-alpha one"
    info, base = http_json(sched_url + "/_sim/info")[0], http_json(sim_url + "/_sim/info")[0]
    assert info["alpha_name"] == "default" and base["alpha"] == info["alpha"]        # alpha: the first regime's
    assert [(r["at"], r["alpha_name"], r["vol"]) for r in info["regimes"]] == [("2024-02-10T00:00:00Z", "none", 2.0)]
    m, m0 = Market.from_info(info, symbols=["BTCUSDT"]), Market.from_info(base, symbols=["BTCUSDT"])
    t = bar_opens(T - 2 * DAY_MS, T + 2 * DAY_MS, "1h")
    p, p0 = m.oracle_proba("BTCUSDT", t), m0.oracle_proba("BTCUSDT", t)
    np.testing.assert_array_equal(p[t < T], p0[t < T])   # a change is a surprise until it begins
    none = Market(["BTCUSDT"], 7, "2024-01-01", 2, alpha="none", regimes=[(T, {"vol": 2.0})])
    np.testing.assert_allclose(p[t >= T], none.oracle_proba("BTCUSDT", t[t >= T]), atol=1e-3)
    assert np.abs(p[t >= T] - p0[t >= T]).max() > 0.05  # the default alpha's oracle was another one


def test_live_change():
    "A running exchange (speed 600) changed through POST /_sim/regime"
    with run_sim(months=1, speed=600) as url:
        now0 = http_json(url + "/_sim/clock")[0]["now"]
        start = now0 // MINUTE_MS * MINUTE_MS - 600 * MINUTE_MS
        before = klines(url, "1m", start, 1000)
        code, text = post(url, {"alpha": "none", "vol": 2.0})
        assert code == 200, text
        sched = json.loads(text)["regimes"]
        at = to_ms(sched[0]["at"])
        assert len(sched) == 1 and now0 < at <= now0 + 5 * MINUTE_MS and at % MINUTE_MS == 0
        assert (sched[0]["alpha_name"], sched[0]["vol"]) == ("none", 2.0)
        assert http_json(url + "/_sim/regime")[0]["regimes"] == sched
        info = http_json(url + "/_sim/info")[0]
        assert info["regimes"] == sched and info["alpha_name"] == "default"
        refusals = [post(url, b) for b in ({"vol": 1.0, "at": now0 - HOUR_MS}, b"{not json", {"vol": "x"},
                                           {"speed": 2}, ["vol", 2])]
        for code, text in refusals:
            assert code == 400 and text.count("\n") == 0 and list(json.loads(text)) == ["error"], (code, text)
        assert "the past is fixed" in json.loads(refusals[0][1])["error"]
        while http_json(url + "/_sim/clock")[0]["now"] < at + 90 * MINUTE_MS: time.sleep(0.5)
        now = http_json(url + "/_sim/clock")[0]["now"]
        after = klines(url, "1m", start, 1000)
        closed = [r for r in before if r[6] < now0]
        assert len(closed) >= 590 and after[:len(closed)] == closed          # the history before: unchanged
        same = Market.from_info(info, clock=lambda: now)                     # the market with the change scheduled
        plain = Market.from_info({**info, "regimes": []}, clock=lambda: now)
        k, k0 = (mk.klines("BTCUSDT", "1m", start, None, 1000) for mk in (same, plain))
        rows = [r for r in after if at <= r[0] and r[6] < now]
        assert len(rows) >= 80
        i = [int(j) for j in np.searchsorted(k["open_time"], [r[0] for r in rows])]
        assert [r[8] for r in rows] == k["trades"][i].tolist()               # the new regime holds after it
        assert [r[8] for r in rows] != k0["trades"][i].tolist()


@pytest.mark.parametrize("spec", ["2024-03-01=vol:abc", "2023-06-01=vol:2", "soon=alpha:none", "2024-03-01=beta:1"])
def test_bad_schedule_exits_2(spec):
    r = subprocess.run([str(BIN / "futbot"), "sim", "--port", "0", "--regime-schedule", spec], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("futbot sim: error: ") and r.stdout == ""
