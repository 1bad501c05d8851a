"""Rate limits end to end, against real `futbot sim` processes with a small weight limit and a short window:
no 418 ever, no 429 while the client's budget is at or below the exchange's, Retry-After honoured when a 429
comes, the stored data equal to an uninterrupted run, and the funding routes' own request-count limit on both
sides. Each guarantee check is also run on a planted bug, and must fail there."""
import re, subprocess, sys, time, urllib.error, urllib.request, json
from dataclasses import replace
import pandas as pd, pytest
from conftest import ROOT, run_sim, sim_post
from test_history import FUTBOT, stored
import futbot.binance as fb
from futbot.binance import Rest, WeightLimiter
from futbot.intervals import to_ms

LIMIT, WINDOW_S = 60, 1                     # the small exchange: 60 weight per 1 s window
FUNDING, FUNDING_WINDOW_S = 5, 2            # and 5 fundingRate requests per 2 s
RANGE = ["--start", "2024-01-05", "--end", "2024-01-25", "--datasets", "klines,mark,funding", "--intervals", "1m,5m"]

IGNORE_RETRY_AFTER = """
import sys, futbot.binance as b
b._retry_after = lambda headers, limiter: 0.0      # planted bug: a 429's Retry-After is ignored
from futbot.cli import main
sys.exit(main(sys.argv[1:]))
"""

def download(url, data_dir, *extra, bug=None):
    "`futbot download` of RANGE, or the same command with a planted bug (python -c BUG download ...)"
    exe = [sys.executable, "-c", bug] if bug else [FUTBOT]
    cmd = [*exe, "download", "--symbol", "BTCUSDT", "--exchange", url, "--data-dir", str(data_dir), "--no-progress",
           *RANGE, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)

def totals(stdout):
    "requests, weight and 429s from the last line of `futbot download`"
    m = re.search(r": (\d+) requests, weight (\d+), 429s (\d+),", stdout)
    assert m, stdout[-1000:]
    return dict(zip(("requests", "weight", "n429"), map(int, m.groups())))

@pytest.fixture(scope="module")
def ref_dir(sim_url, tmp_path_factory):
    "RANGE downloaded from the shared exchange at Binance's limits: the uninterrupted run"
    d = tmp_path_factory.mktemp("ref")
    r = download(sim_url, d)
    assert r.returncode == 0 and totals(r.stdout)["n429"] == 0, r.stderr[-1000:]
    return d

@pytest.fixture
def small_sim():
    "A fresh exchange (fresh per-IP counters) with small limits and short windows"
    with run_sim("--weight-limit", str(LIMIT), "--rate-window-s", str(WINDOW_S),
                 "--funding-limit", str(FUNDING), "--funding-window-s", str(FUNDING_WINDOW_S)) as url:
        yield url

def check_limited_run(r, ref_dir, data_dir, expect_429:bool):
    "The guarantees of one download against the small exchange"
    out, last = r.stdout + r.stderr, (r.stderr.strip().splitlines() or [""])[-1]
    assert r.returncode == 0 and "418" not in out and "banned" not in out, f"exit {r.returncode}: {last}"
    n = totals(r.stdout)
    assert n["weight"] >= 4 * LIMIT, n                                  # the run spans several windows
    assert (n["n429"] > 0) == expect_429, n
    a, b = stored(ref_dir), stored(data_dir)
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    for k in a: pd.testing.assert_frame_equal(b[k], a[k], check_exact=True)

# ---------------------------------------------------------------- weight: 0 429s at the budget, Retry-After above it

def test_budget_at_the_exchange_limit_gets_no_429(small_sim, ref_dir, tmp_path):
    r = download(small_sim, tmp_path, "--weight-budget", str(LIMIT), "--weight-window", str(WINDOW_S),
                 "--funding-budget", str(FUNDING), "--funding-window", str(FUNDING_WINDOW_S))
    check_limited_run(r, ref_dir, tmp_path, expect_429=False)

def test_budget_above_the_exchange_limit_honours_retry_after(small_sim, ref_dir, tmp_path):
    "Four times the exchange's budget: 429s come, each is waited out, no ban, nothing lost"
    r = download(small_sim, tmp_path, "--weight-budget", str(4 * LIMIT), "--weight-window", str(WINDOW_S))
    check_limited_run(r, ref_dir, tmp_path, expect_429=True)

def test_retry_after_check_can_fail(small_sim, ref_dir, tmp_path):
    "Planted bug: the same client ignoring Retry-After is banned (418), and the check above says so"
    r = download(small_sim, tmp_path, "--weight-budget", str(4 * LIMIT), "--weight-window", str(WINDOW_S),
                 bug=IGNORE_RETRY_AFTER)
    with pytest.raises(AssertionError, match="HTTP 418"): check_limited_run(r, ref_dir, tmp_path, expect_429=True)

def forced_429s(url, n=2):
    "Seconds one request takes when the exchange forces `n` 429s with Retry-After: 1 (the sim's http_429 fault)"
    sim_post(url, "/_sim/faults", {"http_429": n})
    rest = Rest(url)
    t0 = time.monotonic()
    rest.server_time()
    return time.monotonic() - t0, rest.totals()["n429"]

def check_forced_429s(seconds, n429, n=2):
    assert n429 == n and seconds >= n - 0.1, f"{n429} 429s answered in {seconds:.2f} s: Retry-After: 1 not waited"

def test_forced_429s_wait_retry_after(sim_url):
    check_forced_429s(*forced_429s(sim_url))

def test_forced_429_check_can_fail(sim_url, monkeypatch):
    monkeypatch.setattr(fb, "_retry_after", lambda headers, limiter: 0.0)   # planted bug: Retry-After ignored
    with pytest.raises(AssertionError, match="not waited"): check_forced_429s(*forced_429s(sim_url))

# ---------------------------------------------------------------- the funding routes' own limit

def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r: return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e: return e.code, json.loads(e.read()), dict(e.headers)

def test_exchange_funding_limit_is_its_own(small_sim):
    "fundingRate counts requests against its own window; weight-limited routes are not touched by it"
    while time.time() % FUNDING_WINDOW_S > 0.3: time.sleep(0.02)       # start at the beginning of a funding window
    fr = [_get(f"{small_sim}/fapi/v1/fundingRate?symbol=BTCUSDT&limit=10") for _ in range(FUNDING + 1)]
    kl = _get(f"{small_sim}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&limit=10")
    assert [r[0] for r in fr] == [200] * FUNDING + [429] and kl[0] == 200, [r[0] for r in fr]
    assert fr[-1][1] == {"code": -1003, "msg": "Too many requests; current limit is 5 requests per 2 SECOND. "
                         "Please use WebSocket Streams for live updates to avoid polling the API."}
    assert 1 <= int(fr[-1][2]["Retry-After"]) <= FUNDING_WINDOW_S and fr[-1][2]["X-MBX-USED-WEIGHT-1M"].isdigit()
    assert kl[2]["X-MBX-USED-WEIGHT-1M"] == "1"                         # funding requests cost no weight
    time.sleep(int(fr[-1][2]["Retry-After"]) + 0.05)
    assert _get(f"{small_sim}/fapi/v1/fundingRate?symbol=BTCUSDT&limit=10")[0] == 200

def funding_calls(url, n=8):
    "`n` fundingRate calls through a client whose funding pool matches the exchange's limit"
    rest = Rest(url, pools={"funding": WeightLimiter(FUNDING, FUNDING_WINDOW_S)})
    t0 = to_ms("2024-01-05")
    rows = [rest.call("funding", symbol="BTCUSDT", startTime=t0 + i * 8 * 3_600_000, limit=10) for i in range(n)]
    return rest, rows

def check_funding_paced(rest, rows, n=8):
    assert rest.totals()["n429"] == 0, f"{rest.totals()['n429']} 429s on fundingRate"
    assert len(rows) == n and all(len(r) == 10 for r in rows)
    assert len(rest.pools["funding"].per_window) >= 2 and rest.limiter.requests == 0   # paced over windows, no weight

def test_client_paces_funding_requests(small_sim):
    check_funding_paced(*funding_calls(small_sim))

def test_funding_pacing_check_can_fail(small_sim, monkeypatch):
    "Planted bug: fundingRate counted in the weight budget, as before, meets the exchange's 429s"
    monkeypatch.setitem(fb.ENDPOINTS, "funding", replace(fb.ENDPOINTS["funding"], pool="weight"))
    with pytest.raises(AssertionError, match="429s on fundingRate"): check_funding_paced(*funding_calls(small_sim))
