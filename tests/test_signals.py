"""Signed signals (issue 13): schema, canonical JSON, HMAC, rotation, the signal log and `futbot verify-signal`."""
import copy, hashlib, hmac, io, json, logging, math, os, subprocess, sys, time, uuid
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import pytest
import futbot.signals as S
from futbot.config import ConfigError, UsageError
from futbot.signals import (SignalError, SignalLog, build_signal, canonical_json, keys_from_env, parse_keys,
                            read_signals, run_verify_signal, sign, signal_uuid, signing_key, validate, verify,
                            verify_stream)

ROOT = Path(__file__).resolve().parent.parent
FUTBOT = str(Path(sys.executable).parent / "futbot")
SECRET, SECRET2 = "test-secret-0123456789abcdef", "rotated-secret-9876543210=="
KEYS = {"k1": SECRET}
T = 1709294400000                                   # 2024-03-01T12:00:00Z
MINUTE = 60_000
MODEL = dict(name="lgbm-BTCUSDT", version="1.2.0", trained_at="2024-02-28T00:00:00+00:00", git_sha=None,
             data_snapshot="sha256:" + hashlib.sha256(b"bars").hexdigest())
PARTS = dict(symbol="BTCUSDT", t_ms=T, side=1, entry=61234.5, leverage=5, position_size_pct=2.5, stop=60311.2,
             take_profits=[(61700.25, 0.3), (62157.8, 0.7)], confidence=0.83,
             uncertainty=dict(method="fold_std", std=0.0412, lo=0.76, hi=0.88), model=MODEL,
             top_features=[("rsi_14_1h", 71.2, 0.12), ("δ_funding", None, -1.5e-05), {"name": "atr", "value": 3,
                                                                                        "contribution": 0.0}],
             backtest=dict(sharpe=1.4, max_drawdown=0.12, win_rate=0.58, precision=0.63, trades=212, dsr=None),
             horizon="4h", risk=dict(risk_amount=25.1, liquidation_price=49500.0, notional=1250.0, margin=250.0))

def make(i:int=0, key_id="k1", secret=SECRET, **change)->dict:
    "The i-th sample signal (one a minute), signed"
    p = {**PARTS, "t_ms": T + i * MINUTE, **change}
    return sign(build_signal(**p, signal_id=signal_uuid(MODEL["name"], p["symbol"], p["t_ms"])), key_id, secret)

def line(s:dict)->str: return canonical_json(s).decode("utf-8")

def independent_verify(text:str, keys:dict)->bool:
    "DESIGN.md's rule with only hmac, hashlib and json: no futbot code"
    try: obj = json.loads(text)
    except ValueError: return False
    if not isinstance(obj, dict): return False
    sig = obj.pop("signature", None)
    secret = keys.get(obj.get("key_id"))
    if not isinstance(sig, str) or secret is None: return False
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hmac.compare_digest(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest(), sig)

def byte_verify(text:str, keys:dict)->bool:
    "The byte-level variant for other languages: the signed bytes are the canonical line minus its signature"
    sig = json.loads(text)["signature"]
    body = text.replace(f',"signature":"{sig}"', "").encode("utf-8")
    secret = keys[json.loads(text)["key_id"]].encode("utf-8")
    return hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).hexdigest(), sig)

# --- signing and verifying ---------------------------------------------------------------------------------

def test_round_trip_and_the_independent_verifiers_agree():
    sigs = [make(i) for i in range(5)] + [make(5, side="short", stop=62157.8, take_profits=[(60311.2, 1.0)]),
                                          make(6, t_ms=T + 250, entry=np.float64(61234.5), leverage=np.int64(3))]
    for s in sigs:
        assert validate(s) is s and verify(s, KEYS)
        assert independent_verify(line(s), KEYS) and independent_verify(json.dumps(s, indent=1), KEYS)
        assert byte_verify(line(s), KEYS)
        moved = {**s, "confidence": 0.5}
        assert independent_verify(line(moved), KEYS) is verify(moved, KEYS) is False
    assert sigs[-1]["timestamp"] == "2024-03-01T12:00:00.250Z" and type(sigs[-1]["leverage"]) is int
    assert {k for s in sigs for k in s} == set(S.load_schema()["properties"])

def test_signature_covers_key_id_and_ignores_an_old_signature():
    s = make()
    assert list(s)[-2:] == ["key_id", "signature"]
    assert sign({**s, "signature": "0" * 64}, "k1", SECRET) == s
    assert not verify({**s, "key_id": "k0"}, {"k0": SECRET, "k1": SECRET})       # same secret, other name: refused
    assert verify(sign(build_signal(**PARTS), "k1", SECRET.encode()), KEYS)      # bytes and str secrets agree

def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items(): yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj): yield from _leaves(v, (*path, i))
    else: yield path, obj

def _changed(v):
    "The smallest change of a value: the next float, +1, the last character swapped"
    if isinstance(v, bool): return not v
    if isinstance(v, int): return v + 1
    if isinstance(v, float): return math.nextafter(v, math.inf)
    if v is None: return 0
    return v[:-1] + ("1" if v[-1] == "0" else "0")

def test_every_changed_value_fails():
    s = make()
    paths = [p for p, _ in _leaves(s) if p != ("signature",)]
    assert len(paths) > 40
    for p, v in _leaves(s):
        if p == ("signature",): continue
        t = copy.deepcopy(s)
        node = t
        for k in p[:-1]: node = node[k]
        node[p[-1]] = _changed(v)
        assert not verify(t, KEYS) and not independent_verify(json.dumps(t), KEYS), p
        assert not verify_stream([json.dumps(t)], KEYS).ok, p
    for extra in ({"note": "x"}, {"backtest": {**s["backtest"], "psr": 0.9}}):      # an added field also breaks it
        assert not verify({**s, **extra}, KEYS)
    assert not verify({k: v for k, v in s.items() if k != "horizon"}, KEYS)

def _flip(c:str)->str:
    if c.isdigit(): return str((int(c) + 1) % 10)
    if c.isalpha() and c.isascii(): return "a" if c == "z" else "A" if c == "Z" else chr(ord(c) + 1)
    return "#" if c != "#" else "!"

def test_a_changed_byte_anywhere_fails():
    text = line(make())
    assert text.isascii() is False                                                  # the δ feature: UTF-8 bytes
    for i in range(len(text)):
        bad = text[:i] + _flip(text[i]) + text[i + 1:]
        assert not independent_verify(bad, KEYS), i
        assert not verify_stream([bad], KEYS).ok, (i, bad[max(0, i - 20):i + 20])
    raw = text.encode("utf-8")
    for i in range(0, len(raw), 7):                                                 # bytes too, invalid UTF-8 included
        bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
        assert not verify_stream([bad.decode("utf-8", errors="replace")], KEYS).ok, i

@pytest.mark.parametrize("bad", [None, 1, "x", [], {}, {"signature": "0" * 64, "key_id": "k1"},
                                 {"signature": 5, "key_id": "k1"}, {"signature": "AB" * 32, "key_id": "k1"},
                                 {"signature": "0" * 64, "key_id": ["k1"]}, {"signature": "0" * 64, "key_id": "k1",
                                                                               "x": float("nan")}])
def test_verify_never_raises(bad):
    assert verify(bad, KEYS) is False
    assert verify(make(), {"k1": ""}) is False and verify(make(), []) is False

def test_signal_uuid_is_a_reproducible_uuid4():
    a, b = signal_uuid("m", "BTCUSDT", T), signal_uuid("m", "BTCUSDT", T + 1)
    assert a == signal_uuid("m", "BTCUSDT", T) and a != b
    u = uuid.UUID(a)
    assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == a
    assert S.validator().is_valid({**make(), "signal_id": a})
    assert signal_uuid("m", "BTC", "USDT") != signal_uuid("m", "BTCUSDT")          # parts stay apart

# --- keys --------------------------------------------------------------------------------------------------

def test_parse_keys():
    assert parse_keys(" k1=a=b , k2.x_y-z=c,,") == {"k1": "a=b", "k2.x_y-z": "c"}
    for text, needle in [("k1=a,k2", "entry 2 is not key_id=secret"), ("k1=", "'k1' has an empty secret"),
                         ("k1=a,k1=b", "'k1' is given twice"), ("", "no keys"), ("a b=c", "key id 'a b' must be"),
                         ("=abc", "key id '' must be")]:
        with pytest.raises(ConfigError, match=needle) as e: parse_keys(text)
        assert "\n" not in str(e.value) and "abc" not in str(e.value).replace("'a b'", "")

def test_keys_and_signing_key_from_env(caplog):
    with pytest.raises(ConfigError, match="FUTBOT_HMAC_KEYS is not set"): keys_from_env({})
    with pytest.raises(ConfigError, match="FUTBOT_HMAC_KEYS is not set"): keys_from_env({"FUTBOT_HMAC_KEYS": "  "})
    env = {"FUTBOT_HMAC_KEYS": f"k1={SECRET},k2={SECRET2}"}
    assert keys_from_env(env) == {"k1": SECRET, "k2": SECRET2}
    with pytest.raises(ConfigError, match="FUTBOT_HMAC_KEY_ID is not set.*one of k1, k2"): signing_key(env)
    with pytest.raises(ConfigError, match=r"FUTBOT_HMAC_KEY_ID='k3' is not among the keys of .* \(k1, k2\)"):
        signing_key({**env, "FUTBOT_HMAC_KEY_ID": "k3"})
    with caplog.at_level(logging.WARNING, logger="futbot.signals"):
        assert signing_key({**env, "FUTBOT_HMAC_KEY_ID": "k2"}) == ("k2", SECRET2)
        assert not caplog.records
        assert signing_key({"FUTBOT_HMAC_KEYS": "k1=short", "FUTBOT_HMAC_KEY_ID": "k1"}) == ("k1", "short")
    assert [r.getMessage() for r in caplog.records] == ["weak_signing_key"]
    with pytest.raises(SignalError, match="empty secret"): sign(build_signal(**PARTS), "k1", "")

def test_key_rotation_keeps_old_signals_verifiable():
    env = {"FUTBOT_HMAC_KEYS": f"k1={SECRET}", "FUTBOT_HMAC_KEY_ID": "k1"}
    old = sign(build_signal(**PARTS), *signing_key(env))
    env = {"FUTBOT_HMAC_KEYS": f"k1={SECRET},k2={SECRET2}", "FUTBOT_HMAC_KEY_ID": "k2"}    # rotate
    new = sign(build_signal(**PARTS), *signing_key(env))
    assert (old["key_id"], new["key_id"]) == ("k1", "k2")
    both = keys_from_env(env)
    assert verify(old, both) and verify(new, both) and verify_stream([line(old), line(new)], both).ok
    only_new = keys_from_env({"FUTBOT_HMAC_KEYS": f"k2={SECRET2}"})                      # k1 retired
    rep = verify_stream([line(old), line(new)], only_new)
    assert (rep.verified, rep.failures) == (1, [f"line 1: {old['signal_id']}: unknown key_id 'k1' (known: k2)"])

# --- schema ------------------------------------------------------------------------------------------------

def test_schema_file_ships_with_the_package():
    from jsonschema import Draft202012Validator
    assert S.SCHEMA_PATH == ROOT / "futbot" / "schemas" / "signal.schema.json"
    Draft202012Validator.check_schema(S.load_schema())
    ini = (ROOT / "settings.ini").read_text()
    assert "package_data = schemas/*.json" in ini                  # setup.py ships futbot/schemas/*.json
    assert S.validator() is S.validator() and S.validator(False) is not S.validator()

def _err(s, **change)->str:
    with pytest.raises(SignalError) as e: validate({**s, **change})
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 200, msg
    return msg

def test_schema_violations_are_one_line_naming_the_path():
    s = make()
    cases = {
        "$.signal_id: '1234' does not match": dict(signal_id="1234"),
        "$.signal_id: '": dict(signal_id=str(uuid.uuid1())),                 # a UUID, but not version 4
        "$.leverage: must be integer, got 2.5": dict(leverage=2.5),
        "$.leverage: must be >= 1, got 0": dict(leverage=0),
        "$.position_size_pct: must be <= 100, got 101": dict(position_size_pct=101),
        "$.confidence: must be <= 1, got 1.2": dict(confidence=1.2),
        "$.side: must be one of long, short, got 'buy'": dict(side="buy"),
        "$.entry.type: must be one of market": dict(entry={"type": "limit", "price": 1.0}),
        "$.take_profits[1].size_pct: must be > 0, got 0": dict(take_profits=[{"price": 62000, "size_pct": 100},
                                                                              {"price": 62500, "size_pct": 0}]),
        "$.take_profits[0].extra: unknown field": dict(take_profits=[{"price": 62000, "size_pct": 100, "extra": 1}]),
        "$.model.data_snapshot: 'abc' does not match": dict(model={**MODEL, "data_snapshot": "abc"}),
        "$.explanation.top_features[0].contribution: missing": dict(explanation={"top_features": [{"name": "a",
                                                                                                   "value": 1}]}),
        "$.risk.notional: must be number, got 'x'": dict(risk={**s["risk"], "notional": "x"}),
        "$.backtest.trades: missing": dict(backtest={"sharpe": 1, "max_drawdown": 0, "win_rate": 0, "precision": 0}),
        "$.uncertainty.std: must be >= 0, got -0.1": dict(uncertainty={**s["uncertainty"], "std": -0.1}),
        "$.horizon: '4 hours' does not match": dict(horizon="4 hours"),
        "$.key_id: 'k 1' does not match": dict(key_id="k 1"),
        "$.signature: 'ABC' does not match": dict(signature="ABC"),
        "$.note: unknown field": dict(note=1),
        "$.timestamp: '2024-03-01 12:00:00' does not match": dict(timestamp="2024-03-01 12:00:00"),
        "$.signal_id: '": dict(signal_id=s["signal_id"] + "\n"),            # `$` would let the newline through
        "$.confidence: nan is not a finite number": dict(confidence=float("nan")),
        "$.explanation.top_features[1].contribution: -inf is not a finite": dict(explanation={"top_features": [
            {"name": "a", "value": 1, "contribution": 1}, {"name": "b", "value": 1, "contribution": -math.inf}]}),
        "$.expires_at: must be timestamp + horizon, 2024-03-01T16:00:00Z": dict(expires_at="2024-03-01T16:00:01Z"),
        "$.take_profits: size_pct adds up to 90, not 100": dict(take_profits=[{"price": 62000, "size_pct": 90}]),
        "$.stop_loss: a long stop must be below the entry 61234.5": dict(stop_loss=61234.5),
        "$.take_profits[0].price: a short target must be below": dict(side="short", stop_loss=62000.0),
        "$.uncertainty: lo is above hi": dict(uncertainty={**s["uncertainty"], "lo": 0.9, "hi": 0.8}),
        "$.timestamp: '2024-02-30T12:00:00Z' is not a real date": dict(timestamp="2024-02-30T12:00:00Z"),
        "$.model.trained_at: '2024-13-01T00:00Z' is not": dict(model={**MODEL, "trained_at": "2024-13-01T00:00Z"}),
    }
    for needle, change in cases.items():
        assert _err(s, **change).startswith(needle), (needle, _err(s, **change))
    assert _err(s, model={k: v for k, v in MODEL.items() if k != "git_sha"}) == "$.model.git_sha: missing"
    assert _err({k: v for k, v in s.items() if k != "risk"}) == "$.risk: missing"
    assert _err(s, take_profits=[]).startswith("$.take_profits:")
    uuid_pattern = S.load_schema()["properties"]["signal_id"]["pattern"]
    assert _err(s, signal_id="x" * 500).endswith("x... does not match " + uuid_pattern)
    with pytest.raises(SignalError, match=r"^\$: a signal is a JSON object, got list$"): validate([s])
    with pytest.raises(SignalError, match=r"^\$.signature: missing$"):
        validate({k: v for k, v in s.items() if k != "signature"})
    unsigned = build_signal(**PARTS)
    assert validate(unsigned, signed=False) is unsigned
    with pytest.raises(SignalError, match=r"^\$.key_id: unknown field$"): validate(s, signed=False)
    assert validate({**s, "backtest": {**s["backtest"], "psr": 0.97, "total_return": 0.2}}) # backtest may carry more

def test_nan_and_non_json_values_are_refused():
    for change, needle in [({"confidence": float("nan")}, "$.confidence: nan"),
                           ({"entry": np.float64("inf")}, "$.entry.price: inf"),
                           ({"risk": {**PARTS["risk"], "margin": float("nan")}}, "$.risk.margin: nan"),
                           ({"top_features": [("a", float("nan"), 0.1)]}, "$.explanation.top_features[0].value: nan"),
                           ({"backtest": {**PARTS["backtest"], "psr": float("inf")}}, "$.backtest.psr: inf"),
                           ({"stop": object()}, "$.stop_loss: a object is not a JSON value"),
                           ({"side": "flat"}, "$.side: must be 1, -1, long or short"),
                           ({"horizon": "soon"}, "$.horizon: not a duration"),
                           ({"model": {"name": "m"}}, "$.model.version: missing")]:
        with pytest.raises(SignalError) as e: build_signal(**{**PARTS, **change})
        assert str(e.value).startswith(needle) and "\n" not in str(e.value), (needle, str(e.value))
    with pytest.raises(SignalError, match="not valid JSON"): canonical_json({"x": float("nan")})
    with pytest.raises(SignalError, match="not valid JSON"): sign({"x": math.inf}, "k1", SECRET)
    with pytest.raises(SignalError, match="not valid JSON"): canonical_json({"x": {1, 2}})

def test_build_signal_keeps_risk_values_unchanged():
    sid = "00000000-0000-4000-8000-000000000000"
    s = build_signal(**{**PARTS, "model": {**MODEL, "extra": "ignored"}}, signal_id=sid)
    assert s["signal_id"] == sid
    assert (s["entry"]["price"], s["stop_loss"], s["confidence"]) == (61234.5, 60311.2, 0.83)
    assert [tp["price"] for tp in s["take_profits"]] == [61700.25, 62157.8]
    assert [tp["size_pct"] for tp in s["take_profits"]] == [0.3 * 100, 70]    # fraction x 100, not rounded
    assert s["explanation"]["top_features"][1] == {"name": "δ_funding", "value": None, "contribution": -1.5e-05}
    assert s["model"] == MODEL and s["backtest"]["dsr"] is None and s["risk"]["notional"] == 1250
    assert (s["timestamp"], s["expires_at"], s["horizon"]) == ("2024-03-01T12:00:00Z", "2024-03-01T16:00:00Z", "4h")
    assert "key_id" not in s and "signature" not in s
    short = build_signal(**{**PARTS, "side": "short", "stop": 62000.0, "take_profits": [(60000.0, 1)]})
    assert short["side"] == "short" and short["take_profits"] == [{"price": 60000, "size_pct": 100}]
    assert build_signal(**PARTS)["signal_id"] != build_signal(**PARTS)["signal_id"]   # random UUID4 by default

# --- the signal log ----------------------------------------------------------------------------------------

def test_signal_log_appends_fsyncs_and_refuses_repeats(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    p = tmp_path / "deep" / "signals.jsonl"
    with SignalLog(p) as log:
        assert [log.append(make(0)), log.append(make(1)), log.append(make(0))] == [True, True, False]
        assert len(synced) == 2                                          # each written line was fsynced
        with pytest.raises(SignalError, match=r"\$.leverage"): log.append({**make(2), "leverage": 0})
        with pytest.raises(SignalError): log.append(build_signal(**PARTS))  # unsigned: refused
    assert p.read_bytes() == (line(make(0)) + "\n" + line(make(1)) + "\n").encode("utf-8")
    with SignalLog(p) as log:                                            # reopened: the ids are remembered
        assert log.append(make(1)) is False and log.append(make(2)) is True and log.torn == 0
    assert [s["signal_id"] for s in read_signals(p)] == [make(i)["signal_id"] for i in range(3)]
    log.close()                                                          # closing twice is harmless

def test_torn_tail_is_skipped_and_the_next_append_starts_a_new_line(tmp_path):
    p = tmp_path / "signals.jsonl"
    sizes = []
    with SignalLog(p) as log:
        for i in range(2):
            log.append(make(i))
            sizes.append(p.stat().st_size)
    whole = p.read_bytes()
    with open(p, "ab") as f: f.write(line(make(2)).encode()[:100])     # a crash in the middle of a write
    sizes.append(p.stat().st_size)
    assert read_signals(p) == [make(0), make(1)] and read_signals(p).torn == 1
    with SignalLog(p) as log:
        sizes.append(p.stat().st_size)                                   # opening changes nothing
        assert log.torn == 1 and log.append(make(2)) and log.append(make(3))
        sizes.append(p.stat().st_size)
    data = p.read_bytes()
    assert data.startswith(whole) and sizes == sorted(sizes) and sizes[2] == sizes[3]   # never truncated
    back = read_signals(p)
    assert back == [make(i) for i in range(4)] and back.torn == 1
    rep = verify_stream(data.decode().splitlines(), KEYS)
    assert (rep.total, rep.verified) == (5, 4) and rep.failures[0].startswith("line 3: ?: not JSON")

def test_a_whole_last_line_without_newline_is_kept(tmp_path):
    p = tmp_path / "signals.jsonl"
    p.write_text(line(make(0)))                                          # another writer forgot the newline
    with SignalLog(p) as log: log.append(make(1))
    assert read_signals(p) == [make(0), make(1)] and p.read_text().count("\n") == 2
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with SignalLog(tmp_path / "empty.jsonl") as log: log.append(make(0))
    assert (tmp_path / "empty.jsonl").read_text() == line(make(0)) + "\n"

# --- verify_stream -----------------------------------------------------------------------------------------

def test_verify_stream_reports_each_failure_in_one_line():
    a, b = make(0), make(1)
    lines = [line(a), "", line({**b, "confidence": 0.5}), line(a), line(make(2, key_id="k9")), "{oops", "[]", line(b)]
    printed = []
    rep = verify_stream(lines, KEYS, out=printed.append)
    assert rep.failures == printed == [
        f"line 3: {b['signal_id']}: bad signature: changed after signing, or signed with another secret",
        f"line 4: {a['signal_id']}: repeated signal_id (first on line 1)",
        f"line 5: {make(2)['signal_id']}: unknown key_id 'k9' (known: k1)",
        "line 6: ?: not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "line 7: ?: $: a signal is a JSON object, got list"]
    assert rep.summary == "verified 2 of 7 signals; 5 failed" and rep.lines()[-1] == rep.summary and not rep.ok
    forged = verify_stream([line({**a, "signature": "0" * 64}), line(a)], KEYS)
    assert forged.verified == 1                                          # a forged copy does not shadow the real one
    odd = verify_stream([json.dumps({**a, "signal_id": "x\ty"}), '{"a": 1, "a": 2}', '{"a": NaN}'], KEYS)
    assert [f.split(": ", 2)[1:] for f in odd.failures] == [
        ["?", "$.signal_id: 'x\\ty' does not match " + S.load_schema()["properties"]["signal_id"]["pattern"]],
        ["?", "not JSON: an object repeats a key"], ["?", "not JSON: NaN is not valid JSON"]]

def test_max_age_refuses_stale_and_far_future_signals():
    s = make(0)
    assert verify_stream([line(s)], KEYS, max_age_s=60, now=T + 60_000).ok
    assert verify_stream([line(s)], KEYS, max_age_s=60, now="2024-03-01T12:00:59Z").ok
    stale = verify_stream([line(s)], KEYS, max_age_s=60, now=T + 61_000)
    assert stale.failures == [f"line 1: {s['signal_id']}: stale: 61 s old (max age 60 s)"]
    ahead = verify_stream([line(s)], KEYS, max_age_s=60, now=T - 3600_000)
    assert ahead.failures == [f"line 1: {s['signal_id']}: from the future: 3600 s ahead (max age 60 s)"]
    assert not verify_stream([line(s)], KEYS, max_age_s=60).ok                # now: the clock, 2024 is stale
    fresh = make(0, t_ms=int(time.time()) * 1000)
    assert verify_stream([line(fresh)], KEYS, max_age_s=60).ok

def test_pretty_printed_and_mixed_input():
    s = make(0)
    assert verify_stream(json.dumps(s, indent=2).splitlines(keepends=True), KEYS).summary == \
        "verified 1 of 1 signals; 0 failed"
    assert verify_stream(["", "  ", *json.dumps(s, indent=2).splitlines()], KEYS).ok
    rep = verify_stream(["{", line(s), "}"], KEYS)                            # not one object: line by line
    assert (rep.total, rep.verified) == (3, 1) and rep.failures[0].startswith("line 1: ?: not JSON")
    assert verify_stream([], KEYS).lines() == ["verified 0 of 0 signals; 0 failed"]

# --- futbot verify-signal ----------------------------------------------------------------------------------

def _env(tmp_path, keys:str|None=f"k1={SECRET}")->dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUTBOT_HMAC")}
    env.update(FUTBOT_LOG_DIR=str(tmp_path / "logs"), FUTBOT_LOG_FORMAT="json")
    if keys is not None: env["FUTBOT_HMAC_KEYS"] = keys
    return env

def _cli(tmp_path, *args, keys:str|None=f"k1={SECRET}", stdin:str|None=None):
    return subprocess.run([FUTBOT, "verify-signal", *args], input=stdin, capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path, keys), timeout=60)

def test_cli_exit_codes_and_lines(tmp_path):
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(line(make(i)) + "\n" for i in range(3)))
    bad.write_text(line(make(0)) + "\n" + line({**make(1), "leverage": 6}) + "\n" + line(make(0)) + "\n")
    r = _cli(tmp_path, str(good))
    assert (r.returncode, r.stdout, r.stderr) == (0, "verified 3 of 3 signals; 0 failed\n", "")
    r = _cli(tmp_path, str(bad))
    assert r.returncode == 1 and r.stdout.splitlines() == [
        f"line 2: {make(1)['signal_id']}: bad signature: changed after signing, or signed with another secret",
        f"line 3: {make(0)['signal_id']}: repeated signal_id (first on line 1)", "verified 1 of 3 signals; 2 failed"]
    r = _cli(tmp_path, "-", "--max-age", "60s", stdin=json.dumps(make(0, t_ms=int(time.time()) * 1000), indent=2))
    assert (r.returncode, r.stdout) == (0, "verified 1 of 1 signals; 0 failed\n"), r.stderr
    r = _cli(tmp_path, "-", "--max-age", "60s", stdin=good.read_text())
    assert r.returncode == 1 and len(r.stdout.splitlines()) == 4 and "stale" in r.stdout

@pytest.mark.parametrize("args,keys,needle", [
    (["signals.jsonl"], None, "FUTBOT_HMAC_KEYS is not set"),
    (["missing.jsonl"], f"k1={SECRET}", "missing.jsonl: no such file"),
    (["signals.jsonl"], "k1", "FUTBOT_HMAC_KEYS: entry 1 is not key_id=secret"),
    (["signals.jsonl", "--max-age", "soon"], f"k1={SECRET}", "--max-age: not a duration"),
])
def test_cli_usage_errors_are_one_line_exit_2(tmp_path, args, keys, needle):
    (tmp_path / "signals.jsonl").write_text(line(make(0)) + "\n")
    r = _cli(tmp_path, *args, keys=keys)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr and r.stdout == "", r.stderr
    assert lines[0].startswith("futbot verify-signal: error: ") and needle in lines[0], lines[0]

def test_run_verify_signal_in_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUTBOT_HMAC_KEYS", f"k1={SECRET}")
    p = tmp_path / "signals.jsonl"
    p.write_text(line(make(0)) + "\n" + line(make(0)) + "\n")
    assert run_verify_signal(SimpleNamespace(file=str(p), max_age=None)) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "verified 1 of 2 signals; 1 failed"
    p.write_text(line(make(0)) + "\n")
    assert run_verify_signal(SimpleNamespace(file=p, max_age="1000000w")) == 0   # a Path works too
    monkeypatch.setattr(sys, "stdin", io.StringIO(line(make(1)) + "\n"))        # no .buffer: read as text
    assert run_verify_signal(SimpleNamespace(file="-", max_age=None)) == 0
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line(make(2)).encode("utf-8"))))
    assert run_verify_signal(SimpleNamespace(file="-")) == 0
    assert capsys.readouterr().out.count("verified 1 of 1 signals; 0 failed") == 3
    with pytest.raises(UsageError, match="no such file"): run_verify_signal(SimpleNamespace(file=str(tmp_path / "x")))
    with pytest.raises(UsageError, match="cannot read it"): run_verify_signal(SimpleNamespace(file=str(tmp_path)))
    with pytest.raises(UsageError, match="must be > 0"): run_verify_signal(SimpleNamespace(file=str(p), max_age="0s"))
    with pytest.raises(UsageError, match="--max-age: not a duration"):
        run_verify_signal(SimpleNamespace(file=str(p), max_age="soon"))
    monkeypatch.delenv("FUTBOT_HMAC_KEYS")
    with pytest.raises(ConfigError, match="FUTBOT_HMAC_KEYS is not set"):
        run_verify_signal(SimpleNamespace(file=str(p)))

def test_cli_main_wires_verify_signal(tmp_path, monkeypatch, capsys):
    from futbot.cli import HANDLERS, build_parser, main
    from futbot.config import setup_logging
    assert HANDLERS["verify-signal"] == "futbot.signals:run_verify_signal"
    args = build_parser("verify-signal").parse_args(["verify-signal", "-", "--max-age", "60s"])
    assert (args.file, args.max_age) == ("-", "60s")
    monkeypatch.setenv("FUTBOT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("FUTBOT_HMAC_KEYS", f"k1={SECRET}")
    p = tmp_path / "s.jsonl"
    p.write_text(line(make(0)) + "\n")
    try:
        assert main(["verify-signal", str(p)]) == 0
        assert main(["verify-signal", str(tmp_path / "nope")]) == 2
    finally: setup_logging(log_dir="", stderr=False)                  # drop the handlers main set up
    out = capsys.readouterr()
    assert out.out == "verified 1 of 1 signals; 0 failed\n" and "nope: no such file" in out.err

def test_module_imports_fast_without_jsonschema():
    code = ("import sys, time; t = time.perf_counter(); import futbot.signals; "
            "print(time.perf_counter() - t, 'jsonschema' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    secs, loaded = r.stdout.split()
    assert loaded == "False" and float(secs) < 0.5, r.stdout + r.stderr
