"""Redis Streams output (issue 13): every signal reaches a consumer group exactly once, across a restart of the
publisher and of Redis itself, through an outage (backlog, flush), never out of order. Runs a real Debian
`redis-server` (installed where missing) on a free port in a temporary folder; never fakeredis."""
import hashlib, itertools, json, logging, subprocess, sys, threading, time
import pytest
from futbot.config import ConfigError
from futbot.signals import (DEFAULT_STREAM, OutputError, RedisOutput, SignalError, SignalLog, build_signal,
                            canonical_json, parse_json, read_signals, redis_url, sign, signal_uuid, stream_fields,
                            stream_id, verify)

SECRET = "test-secret-0123456789abcdef"
KEYS = {"k1": SECRET}
T = 1709294400000                              # 2024-03-01T12:00:00Z
MINUTE = 60_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")               # the service's symbols: a signal's seq is its symbol's rank
MODEL = dict(name="lgbm", version="1.2.0", trained_at="2024-02-28T00:00:00Z", git_sha="0123abc",
             data_snapshot="sha256:" + hashlib.sha256(b"bars").hexdigest())
PARTS = dict(t_ms=T, side=1, entry=61234.5, leverage=5, position_size_pct=2.5, stop=60311.2,
             take_profits=[(61700.25, 0.3), (62157.8, 0.7)], confidence=0.83,
             uncertainty=dict(method="fold_std", std=0.04, lo=0.76, hi=0.88), model=MODEL,
             top_features=[("rsi_14_1h", 71.2, 0.12)], horizon="4h",
             backtest=dict(sharpe=1.4, max_drawdown=0.12, win_rate=0.58, precision=0.63, trades=212),
             risk=dict(risk_amount=25.1, liquidation_price=49500.0, notional=1250.0, margin=250.0))
QUICK = dict(retries=2, backoff_s=0.01)        # an output that gives up fast when Redis is down
_streams = itertools.count()

def make(i:int, symbol:str="BTCUSDT", **change)->dict:
    "The signed signal of `symbol` at the i-th minute"
    p = {**PARTS, "symbol": symbol, "t_ms": T + i * MINUTE, **change}
    return sign(build_signal(**p, signal_id=signal_uuid(MODEL["name"], symbol, p["t_ms"])), "k1", SECRET)

def batch(minutes)->list:
    "(signal, seq) for each symbol at each minute, in publishing order"
    return [(make(i, sym), seq) for i in minutes for seq, sym in enumerate(SYMBOLS)]

def drain(out:RedisOutput, group:str, consumer:str="c")->list:
    "Every entry the group still has for anyone, read and acknowledged by `consumer`: [(entry_id, signal)]"
    got = []
    while True:
        part = out.read_group(group, consumer, count=7)
        if not part: return got
        out.ack(group, *[eid for eid, _ in part])
        got += part

# --- a real redis-server ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(redis_server):
    "One redis-server for the module (conftest); a test that stops it starts it again"
    return redis_server

@pytest.fixture
def out(server):
    "A publisher on a fresh stream of the module's server"
    o = RedisOutput(server.url, stream=f"test:signals:{next(_streams)}")
    yield o
    o.close()

def reader(server, out)->RedisOutput:
    "Another connection on the same stream: a consumer in its own process would hold its own"
    return RedisOutput(server.url, stream=out.stream)

# --- exactly once --------------------------------------------------------------------------------------------

def test_each_signal_reaches_a_group_once_and_every_group_reads_all(server, out):
    sigs = batch(range(15))
    assert out.ensure_group("exec") and out.ensure_group("archive") and not out.ensure_group("exec")
    seen, lock, stop = {"a": [], "b": []}, threading.Lock(), threading.Event()
    def consume(name):
        with reader(server, out) as r:
            while not stop.is_set():
                part = r.read_group("exec", name, count=2, block_ms=50)
                r.ack("exec", *[eid for eid, _ in part])
                with lock: seen[name] += part
    threads = [threading.Thread(target=consume, args=(n,)) for n in seen]
    for t in threads: t.start()
    try:
        assert [out.publish(s, seq) for s, seq in sigs] == [True] * len(sigs)
        until = time.monotonic() + 10
        while sum(map(len, seen.values())) < len(sigs) and time.monotonic() < until: time.sleep(0.02)
    finally:
        stop.set()
        for t in threads: t.join(5)
    got = seen["a"] + seen["b"]
    ids = [s["signal_id"] for _, s in got]
    assert len(ids) == len(set(ids)) == len(sigs), "a signal twice or one missing"
    assert {s["signal_id"] for s, _ in sigs} == set(ids)
    assert seen["a"] and seen["b"], "both consumers of the group share the work"
    assert all(verify(s, KEYS) for _, s in got)
    assert dict((s["signal_id"], s) for _, s in got) == {s["signal_id"]: s for s, _ in sigs}   # unchanged
    assert out.client.xpending(out.stream, "exec")["pending"] == 0
    archive = drain(out, "archive")                                      # the other group, at its own pace
    assert [s for _, s in archive] == [s for s, _ in sigs]               # all of them, in publishing order
    assert [eid for eid, _ in archive] == [stream_id(s, seq) for s, seq in sigs]

def test_entry_fields_let_consumers_filter(out):
    s = make(0, "ETHUSDT")
    out.publish(s, seq=1)
    (eid, fields), = out.client.xrange(out.stream)
    assert eid == f"{T}-1"
    assert fields == {"signal": canonical_json(s).decode(), "signal_id": s["signal_id"], "symbol": "ETHUSDT",
                      "side": "long", "timestamp": "2024-03-01T12:00:00Z"} == stream_fields(s)

def test_a_restarted_publisher_adds_only_new_signals(server, out, tmp_path):
    "The restarted service publishes its whole signals file again, then new signals: the group gets each once"
    out.ensure_group("exec")
    log = SignalLog(tmp_path / "signals.jsonl")                          # the service's own signals file
    first = batch(range(6))
    for s, seq in first:
        assert log.append(s) and out.publish(s, seq)
    early = out.read_group("exec", "c1", count=5)                        # a consumer is part-way through
    out.ack("exec", *[eid for eid, _ in early])
    log.close()
    stream, out = out.stream, None                                       # the service dies: no close, no flush
    later = batch(range(6, 10))
    with SignalLog(tmp_path / "signals.jsonl") as log, RedisOutput(server.url, stream=stream) as again:
        for s, seq in later: assert log.append(s)
        old = read_signals(log.path)                                     # what the restarted service finds
        assert old == [s for s, _ in first + later]
        added = [again.publish(s, SYMBOLS.index(s["symbol"])) for s in old]
        assert added == [False] * len(first) + [True] * len(later)
        rest = drain(again, "exec", "c2")
        ids = [s["signal_id"] for _, s in early + rest]
        assert ids == [s["signal_id"] for s, _ in first + later]         # each of the M exactly once, in order
        assert again.client.xlen(stream) == len(first + later)

PUBLISHER = """
import json, sys, time
from futbot.signals import RedisOutput
url, stream, path = sys.argv[1:4]
out = RedisOutput(url, stream=stream)
for line in open(path):
    s, seq = json.loads(line)
    print(out.publish(s, seq), flush=True)
    time.sleep(0.005)
time.sleep(60)                                   # killed before it gets here
"""

def test_sigkill_mid_run_then_republish_everything(server, out, tmp_path):
    "A publisher process killed at an arbitrary point, restarted on the whole list: each entry once"
    sigs = batch(range(40))
    todo = tmp_path / "todo.jsonl"
    todo.write_text("".join(json.dumps([s, seq]) + "\n" for s, seq in sigs))
    p = subprocess.Popen([sys.executable, "-c", PUBLISHER, server.url, out.stream, str(todo)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = [p.stdout.readline().strip() for _ in range(5)]
        assert first == ["True"] * 5, (first, p.stderr.read() if p.poll() is not None else "")
    finally:
        p.kill()                                                         # SIGKILL, somewhere in the list
        p.wait(10)
    done = out.client.xlen(out.stream)
    assert 5 <= done < len(sigs)
    added = [out.publish(s, seq) for s, seq in sigs]
    assert added == [False] * done + [True] * (len(sigs) - done)
    out.ensure_group("exec")
    assert [s for _, s in drain(out, "exec")] == [s for s, _ in sigs]

def test_a_lost_reply_is_not_a_second_entry(server, out):
    "XADD applied but its answer lost (the publisher retries): the retry finds the entry and adds nothing"
    s = make(0)
    assert out.publish(s)
    with RedisOutput(server.url, stream=out.stream) as other:
        other.backlog.append((stream_id(s), stream_fields(s)))           # as if the first try's reply never came
        assert other.flush() == 1 and other.pending() == 0
    assert out.client.xlen(out.stream) == 1

def test_redis_restart_keeps_the_stream_and_the_groups(server, out):
    "SIGKILL redis-server: the append-only file (fsynced per write) keeps entries, groups and pending entries"
    sigs = batch(range(5))
    out.ensure_group("exec")
    for s, seq in sigs: out.publish(s, seq)
    got = out.read_group("exec", "c1", count=3)
    out.ack("exec", got[0][0])                                           # two left pending for c1
    out.close()
    server.stop(kill=True)
    server.start()
    with RedisOutput(server.url, stream=out.stream) as again:
        assert again.client.xlen(again.stream) == len(sigs)
        assert again.client.xpending(again.stream, "exec")["pending"] == 2
        assert [again.publish(s, seq) for s, seq in sigs] == [False] * len(sigs)
        new = batch([5])
        assert [again.publish(s, seq) for s, seq in new] == [True, True]
        rest = drain(again, "exec", "c1")
        claimed = again.claim("exec", "c2", min_idle_ms=0)               # c1 never came back for its two
        again.ack("exec", *[eid for eid, _ in claimed])
        ids = [s["signal_id"] for _, s in got[:1] + claimed + rest]
        assert sorted(ids) == sorted(s["signal_id"] for s, _ in sigs + new) and len(ids) == len(set(ids))
        assert again.client.xpending(again.stream, "exec")["pending"] == 0

# --- outages -------------------------------------------------------------------------------------------------

def test_redis_down_keeps_signals_in_the_backlog_then_delivers_them_in_order(server, out):
    out.ensure_group("exec")
    sigs = batch(range(2))                                               # four signals
    out.publish(*sigs[0])
    down = RedisOutput(server.url, stream=out.stream, **QUICK)
    server.stop()
    try:
        for s, seq in sigs[1:3]:
            with pytest.raises(OutputError) as e: down.publish(s, seq)
            assert "XADD failed after 3 tries" in str(e.value) and "\n" not in str(e.value)
        assert down.pending() == 2
        with pytest.raises(OutputError): down.flush()
        assert [sid for sid, _ in down.backlog] == [stream_id(s, seq) for s, seq in sigs[1:3]]
        slow = RedisOutput(server.url, stream="test:never", retries=3, backoff_s=0.05)
        t0 = time.monotonic()
        with pytest.raises(OutputError, match="after 4 tries"): slow.publish(make(50))
        assert time.monotonic() - t0 >= 0.05 + 0.1 + 0.2                 # it waited, doubling each time
    finally: server.start()
    assert down.publish(*sigs[3]) is True and down.pending() == 0       # the backlog went first, in order
    assert down.flush() == 0
    assert [s for _, s in drain(out, "exec")] == [s for s, _ in sigs]    # each once, in order
    down.close()

# --- refusals ------------------------------------------------------------------------------------------------

def test_out_of_order_and_conflicting_ids_raise(out):
    assert out.publish(make(2))
    with pytest.raises(SignalError, match=r"is older than the top of .* published out of order"): out.publish(make(1))
    assert out.pending() == 0                                            # no retry can deliver it: dropped, loudly
    with pytest.raises(SignalError, match="holds signal"): out.publish(make(2, "ETHUSDT"))   # same time, same seq
    assert out.publish(make(2, "ETHUSDT"), seq=1)
    assert out.publish(make(2)) is False                                 # the same signal again: delivered already

def test_trimmed_entries_count_as_delivered_only_when_trimming(server, out, caplog):
    for i in range(4): out.publish(make(i))
    out.client.xtrim(out.stream, maxlen=2, approximate=False)            # entries of minutes 0 and 1 are gone
    with pytest.raises(SignalError, match="out of order"): out.publish(make(0))
    with RedisOutput(server.url, stream=out.stream, maxlen=2) as trimming:
        with caplog.at_level(logging.WARNING, logger="futbot.signals"):
            assert trimming.publish(make(0)) is False
        assert "redis_trimmed" in caplog.text
        old = out.client.config_get("stream-node-max-entries")["stream-node-max-entries"]
        out.client.config_set("stream-node-max-entries", 2)             # small nodes: MAXLEN ~ trims at once
        try:
            for i in range(4, 24): trimming.publish(make(i))
        finally: out.client.config_set("stream-node-max-entries", old)
        assert 2 <= trimming.client.xlen(out.stream) <= 6

def test_wrong_key_type_is_an_output_error_and_keeps_the_signal(out):
    out.client.set(out.stream, "not a stream")
    with pytest.raises(OutputError, match="WRONGTYPE"): out.publish(make(0))
    assert out.pending() == 1
    with pytest.raises(OutputError, match="WRONGTYPE"): out.ensure_group("g")
    out.client.delete(out.stream)
    assert out.flush() == 1

def test_consumer_helpers(out):
    with pytest.raises(ValueError, match="wait forever"): out.read_group("g", "c", block_ms=0)
    assert out.ack("g") == 0
    out.client.xadd(out.stream, {"other": "app"})                        # not a futbot entry: skipped
    out.ensure_group("g")
    assert out.read_group("g", "c") == []

# --- configuration -------------------------------------------------------------------------------------------

def test_from_env(server, monkeypatch):
    assert RedisOutput.from_env({}) is None and RedisOutput.from_env({"FUTBOT_REDIS_URL": " "}) is None
    with RedisOutput.from_env({"FUTBOT_REDIS_URL": server.url}) as o:
        assert (o.stream, o.maxlen, o.pending()) == (DEFAULT_STREAM, None, 0)
    env = {"FUTBOT_REDIS_URL": server.url, "FUTBOT_REDIS_STREAM": "x:y", "FUTBOT_REDIS_MAXLEN": "1000"}
    with RedisOutput.from_env(env) as o: assert (o.stream, o.maxlen) == ("x:y", 1000)
    monkeypatch.delenv("FUTBOT_REDIS_URL", raising=False)
    assert RedisOutput.from_env() is None

@pytest.mark.parametrize("url, needle", [
    ("http://127.0.0.1:6379", "must start with redis://, rediss:// or unix://"),
    ("redis://:hunter2@127.0.0.1:63a79/0", "has a bad port"),
    ("redis://127.0.0.1:99999/0", "has a bad port"),
    ("redis://127.0.0.1:6379/zero", "the path must be a database number"),
    ("redis://127.0.0.1:6379/0?db=x", "Invalid value for 'db'"),
    ("unix://", "names no socket path"),
])
def test_a_malformed_url_is_one_line_without_the_password(url, needle):
    with pytest.raises(ConfigError) as e: RedisOutput.from_env({"FUTBOT_REDIS_URL": url})
    msg = str(e.value)
    assert msg.startswith("FUTBOT_REDIS_URL: ") and needle in msg and "\n" not in msg, msg
    assert "hunter2" not in msg

def test_other_config_errors():
    with pytest.raises(ConfigError, match="FUTBOT_REDIS_MAXLEN: must be a whole number > 0, got '1e3'"):
        RedisOutput.from_env({"FUTBOT_REDIS_URL": "redis://h", "FUTBOT_REDIS_MAXLEN": "1e3"})
    with pytest.raises(ConfigError, match="stream name is empty"): RedisOutput("redis://h", stream="")
    assert redis_url(" redis://h:1/2 ") == "redis://h:1/2"
    o = RedisOutput("redis://u:hunter2@h/0?password=hunter2")
    assert "hunter2" not in repr(o) and "***" in repr(o)

def test_stream_ids_refuse_bad_input():
    s = make(0)
    for seq in (-1, 2 ** 64, 1.0, True, "1"):
        with pytest.raises(SignalError, match="seq must be"): stream_id(s, seq)
    for t in (None, 5, "noon", "1969-12-31T23:59:59Z"):
        with pytest.raises(SignalError, match=r"\$.timestamp"): stream_id({**s, "timestamp": t})
    with pytest.raises(SignalError, match="0-0 is reserved"): stream_id({**s, "timestamp": "1970-01-01T00:00:00Z"})
    assert stream_id({**s, "timestamp": "1970-01-01T00:00:00Z"}, 1) == "0-1"
    assert stream_id(make(0, t_ms=T + 250)) == f"{T + 250}-0"
    assert parse_json(stream_fields(s)["signal"]) == s
