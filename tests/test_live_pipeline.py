"""The live path end to end: bars emitted by the WebSocket bar builder feed `LiveFeatures` through
`replay_live`, and the rows equal `build_features` on the REST download of the same bars."""
import numpy as np, pandas as pd
from futbot.exchange import SimServer
from futbot.history import download, load_bars
from futbot.streams import StreamManager, run_sync, bars_frame
from futbot.features import build_features, replay_live

TFS = ("1m", "5m", "1h", "4h", "1d")

def test_streamed_bars_give_the_batch_features(tmp_path):
    with SimServer(months=2, speed=600, seed=5, weight_limit=1_000_000) as sim:
        got = []
        mgr = StreamManager(sim.url, ["BTCUSDT"], TFS, on_bar=got.append, oi_poll_s=None)
        run_sync(mgr.run(duration_s=6))                          # ~1 simulated hour at speed 600
        download("BTCUSDT", ["klines"], list(TFS), months=2, exchange=sim.url, data_dir=tmp_path, progress=False)
    streamed = {tf: bars_frame([b for b in got if b["interval"] == tf]) for tf in TFS}
    rest = {tf: load_bars("BTCUSDT", tf, data_dir=tmp_path) for tf in TFS}
    s5 = streamed["5m"]
    assert len(s5) >= 6 and len(streamed["1m"]) >= 30
    # live bars: REST history before the stream began, the streamed bars from then on
    mixed = {}
    for tf in TFS:
        s, r = streamed[tf], rest[tf]
        first = s.index[0] if len(s) else r.index[-1] + pd.Timedelta(1, "ms")
        pd.testing.assert_frame_equal(s[r.columns].loc[s.index.isin(r.index)], r.loc[r.index.isin(s.index)], check_exact=True)
        mixed[tf] = pd.concat([r[r.index < first], s[r.columns]])
    start = s5.index[0] + pd.Timedelta("5min")                 # the first decision made from a streamed base bar
    live = replay_live(mixed, start=start)
    batch = build_features(rest).loc[live.index]
    assert len(live) >= 5
    pd.testing.assert_frame_equal(live[batch.columns], batch, check_exact=False, rtol=1e-9, atol=1e-9)
