"""The live dashboard of a real `futbot serve` in headless Chromium: no data without the token, the token asked once,
a new signal shown from the WebSocket without a reload, nothing loaded from another host, no console error, and a
layout that fits 1280x800 and a 390-pixel phone; screenshots of both are kept under artifacts/screenshots."""
import json, os, signal, subprocess, time, urllib.error, urllib.request
from pathlib import Path
from urllib.parse import urlparse
import pytest
from conftest import BIN, ROOT, EVEN_BETS, confident_threshold
from futbot.intervals import to_ms
from futbot.serve import serve_copy

TOKEN = "dashboard-token-abcdefghijklmnop"
ENV = {"FUTBOT_HMAC_KEYS": "k1=dashboard-test-secret-0123456789", "FUTBOT_HMAC_KEY_ID": "k1",
       "FUTBOT_API_TOKENS": TOKEN}
SHOTS = ROOT / "artifacts" / "screenshots"   # kept for the closing note (artifacts/ is git-ignored)
WAIT_S = 30                                  # longest wait for the page's data, and for a new signal pushed
PHONE = (390, 844)

def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()

@pytest.fixture(scope="module")
def served(trained_market, tmp_path_factory):
    "`futbot serve` of the shared market on a copy of its data, at a threshold the models reach on a fifth of the bars"
    d, url, folders = trained_market
    w = tmp_path_factory.mktemp("dashboard")
    thr = confident_threshold(d, folders, to_ms("2024-02-25"), to_ms("2030-01-01"), 0.8)
    cfg = w / "low.yaml"
    cfg.write_text(f"signals:\n  min_confidence: {thr:.9f}\n  cooldown: 15m\n" + EVEN_BETS +
                   f"alerts:\n  store: {w / 'alerts.db'}\n")   # the shared artifacts' alert history stays untouched
    data = serve_copy(d / "data", w / "data")                   # ... and so do the shared data's signal log and origin
    p = subprocess.Popen([str(BIN / "futbot"), "serve", "--exchange", url, "--port", "0", "--data-dir", str(data),
                          "--artifacts-dir", str(d / "art"), "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FUTBOT_LOG_DIR=str(w / "logs"), **ENV))
    line = p.stdout.readline()
    assert line.startswith("futbot serve: http://"), (line, p.stderr.read() if p.poll() is not None else "")
    try: yield line.split()[2]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0, p.stderr.read()[-3000:]

def wait_for(browser, js:str, timeout:float=WAIT_S, what:str=""):
    "Poll a JavaScript expression until it is truthy; its value"
    end = time.time() + timeout
    while time.time() < end:
        v = browser.execute_script("return " + js)
        if v: return v
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout} s for {what or js}")

def severe(browser)->list:
    "Console entries at level SEVERE since the last call (reading the log empties it)"
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

def sign_in(browser, token:str):
    from selenium.webdriver.common.by import By
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button").click()

ROW_IDS = "[...document.querySelectorAll('#signals tbody tr')].map(r => r.dataset.signalId)"

def test_dashboard_in_chromium(served, browser):
    "No data without the token; with it the data shows, a pushed signal appears without a reload; local files only"
    base = served
    code, body = get(base + "/api/dashboard")
    assert code == 401 and "signals" not in body, body
    code, body = get(base + "/api/dashboard", "wrong-token-0123456789")
    assert code == 401 and "signals" not in body, body
    assert get(base + "/api/dashboard?limit=0", TOKEN)[0] == 400
    assert get(base + "/dashboard")[0] == 200

    browser.set_window_size(1280, 800)
    browser.get(base + "/dashboard")
    wait_for(browser, "document.getElementById('message').textContent.includes('Enter an API token')", 10)
    assert browser.execute_script("return document.getElementById('data').hidden")
    sign_in(browser, "wrong-token-0123456789")
    wait_for(browser, "document.getElementById('message').textContent.includes('refused')", 10, "the refusal")
    assert browser.execute_script("return document.getElementById('data').hidden")
    assert browser.execute_script(f"return {ROW_IDS}.length") == 0            # no data shown with a wrong token
    refused = severe(browser)                                                # the browser logs the 401 it got
    assert all("401" in e["message"] for e in refused), refused

    sign_in(browser, TOKEN)
    wait_for(browser, "window.futbotDashboard && !document.getElementById('data').hidden", what="the data")
    wait_for(browser, "document.getElementById('live').textContent === 'stream open'", 10, "the WebSocket")
    browser.execute_script("window.notReloaded = true")
    before = set(browser.execute_script(f"return {ROW_IDS}"))
    new = wait_for(browser, "[...document.querySelectorAll('#signals tbody tr.new')].map(r => r.dataset.signalId)"
                   f".filter(i => !{json.dumps(sorted(before))}.includes(i))", what="a signal pushed by the WebSocket")
    assert browser.execute_script("return window.notReloaded === true"), "the page was reloaded"
    after = browser.execute_script(f"return {ROW_IDS}")
    assert set(new) <= set(after) and len(after) >= min(len(before) + 1, 50), (len(before), len(after))
    assert browser.execute_script("return sessionStorage.getItem('futbot_token')") == TOKEN

    time.sleep(1)                                  # the refresh the pushed signal starts
    assert not severe(browser)
    res = browser.execute_script("return performance.getEntriesByType('resource')"
                                 ".map(e => [e.name, e.initiatorType, e.responseStatus])")
    host = urlparse(base).netloc
    assert res and all(urlparse(n).netloc == host for n, _, _ in res), res                # nothing from another host
    assert all(st == 200 for n, _, st in res if "/api/" not in n), res       # the wrong token's fetch got 401
    loaded = browser.execute_script("""return {
        images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
        scripts: [...document.scripts].map(s => s.src),
        sheets: [...document.styleSheets].map(s => [s.href, s.cssRules.length]),
        links: [...document.querySelectorAll('link[rel=stylesheet]')].length}""")
    assert all(loaded["images"]), loaded
    assert loaded["scripts"] and all(s in [n for n, _, _ in res] for s in loaded["scripts"]), loaded
    assert len(loaded["sheets"]) == loaded["links"] and all(n > 0 for _, n in loaded["sheets"]), loaded
    assert browser.execute_script("return document.querySelectorAll('#charts svg path').length") > 0   # a price drawn
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "dashboard-1280x800.png"))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 1280

    browser.set_window_size(*PHONE)
    try:
        wait_for(browser, f"window.innerWidth === {PHONE[0]}", 10, "the phone width")
        time.sleep(0.5)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= PHONE[0], f"the page is {width} pixels wide on a {PHONE[0]}-pixel screen"
        browser.save_screenshot(str(SHOTS / "dashboard-390x844.png"))
    finally: browser.set_window_size(1280, 800)
    assert not severe(browser)
