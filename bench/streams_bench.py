"""Stream figures for `make bench` (bench/run.py calls `bench_figures()`).

- ingest_msgs_per_s: combined-stream aggTrade messages per second through `StreamManager.handle`
  (JSON parsing, validation, de-duplication, bar building for 1m and 5m, ring buffers, timeline),
  fed with real sim-formatted frames: the aggTrades of 3 simulated days of BTCUSDT, with the closed
  1m/5m kline frames interleaved where the exchange sends them. Only aggTrade messages are counted.
- stream_rss_mb: resident memory of a fresh process that ran every stream for 2 symbols (klines 1m/5m,
  aggTrade, depth@100ms, bookTicker, markPrice@1s, forceOrder, open interest) against `futbot sim`
  (a separate process, speed 600) for one simulated hour."""
import json, subprocess, sys, time
from pathlib import Path

DAY = 86_400_000

def sim_frames(days:int=3, symbol:str="BTCUSDT")->tuple:
    "Real sim-formatted combined-stream frames: aggTrades and closed 1m/5m klines in exchange order; (frames, n aggTrades)"
    from futbot.sim import Market
    from futbot.vision import agg_rows
    from futbot.exchange import ws_kline
    m = Market(symbols=[symbol], months=1, seed=7)
    m.clock = lambda: m.t0_ms                     # a fixed 'now' at the end of the history
    t1 = m.start_ms + 25 * DAY; t0 = t1 - days * DAY
    events = []
    nxt = None
    while True:
        t = m.agg_trades(symbol, None, None, nxt, 1000) if nxt is not None else m.agg_trades(symbol, t0, t0 + 3_600_000, None, 1000)
        if not len(t["a"]): break
        keep = t["T"] < t1
        rows = agg_rows(symbol, {c: v[keep] for c, v in t.items()})
        for r in rows: events.append((r["T"], 0, '{"stream":"%s@aggTrade","data":%s}' % (symbol.lower(), json.dumps({"e": "aggTrade", "E": r["T"] + 5, "s": symbol, **r}, separators=(",", ":")))))
        if not keep.all(): break
        nxt = int(t["a"][-1]) + 1
    n_agg = len(events)
    for iv in ("1m", "5m"):
        k = m.klines(symbol, iv, t0, t1 - 1, 1500 if iv == "5m" else 1000)
        while True:
            for i in range(len(k["open_time"])):
                ct = int(k["close_time"][i]); d = ws_kline(symbol, k, i, iv, ct + 1)
                events.append((ct + 1, 1, '{"stream":"%s@kline_%s","data":%s}' % (symbol.lower(), iv, json.dumps(d, separators=(",", ":")))))
            last = int(k["open_time"][-1])
            if len(k["open_time"]) < 1000 or last >= t1 - 60_000: break
            k = m.klines(symbol, iv, last + 1, t1 - 1, 1000)
    events.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in events], n_agg

def ingest_rate(frames:list, n_agg:int)->tuple:
    "aggTrade messages per second through the message path, and the manager after it"
    from futbot.streams import StreamManager
    mgr = StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m", "5m"], kinds=("kline", "aggTrade"), max_wait_s=0)
    for f in frames[:2000]: StreamManager("http://127.0.0.1:9", ["BTCUSDT"], ["1m", "5m"]).handle(f)   # warm-up
    h = mgr.handle
    t = time.perf_counter()
    for f in frames: h(f)
    mgr.flush()
    dt = time.perf_counter() - t
    return n_agg / dt, mgr

def _rss_child(url:str, speed:float)->dict:
    "In a fresh process: every stream for 2 symbols for one simulated hour, then the process RSS"
    import asyncio, psutil
    from futbot.streams import StreamManager
    mgr = StreamManager(url, ["BTCUSDT", "ETHUSDT"], ["1m", "5m"], oi_poll_s=1.0, silence_s=5)
    st = asyncio.run(mgr.run(duration_s=3600 / speed + 1.0, handle_signals=False))
    return {"rss_mb": psutil.Process().memory_info().rss / 2**20, "messages": st["messages"], "bars": st["bars"], "malformed": st["malformed"]}

def stream_rss_mb(speed:float=600.0)->float:
    "Resident memory after one simulated hour of all streams for 2 symbols"
    bin_ = Path(sys.executable).parent
    sim = subprocess.Popen([str(bin_ / "futbot"), "sim", "--port", "0", "--months", "1", "--speed", str(speed)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = sim.stdout.readline().strip()
        out = subprocess.run([sys.executable, __file__, "--rss-child", url, str(speed)], capture_output=True, text=True, timeout=120)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"bench: streams for 1 simulated hour: {r}", file=sys.stderr)
        return r["rss_mb"]
    finally:
        sim.terminate(); sim.wait(20)

def bench_figures()->dict:
    frames, n_agg = sim_frames()
    rate, mgr = ingest_rate(frames, n_agg)
    print(f"bench: ingest {n_agg} aggTrades ({len(frames)} frames), {mgr.stats['bars']} bars, {rate:,.0f} msg/s", file=sys.stderr)
    return {"ingest_msgs_per_s": round(rate), "stream_rss_mb": round(stream_rss_mb(), 1)}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child": print(json.dumps(_rss_child(sys.argv[2], float(sys.argv[3]))))
    else: print(json.dumps(bench_figures()))
