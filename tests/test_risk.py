"""futbot.risk: every rule at its boundary (issue 11). Pure functions, no I/O: the whole file runs in well under a second."""
import math
from dataclasses import replace
import pytest
from futbot.config import ConfigError, load_config
from futbot.intervals import DAY_MS, HOUR_MS, SECOND_MS
from futbot.risk import (REASONS, MM_BRACKETS, MM_CUMS, RiskConfig, RiskState, OpenPosition, Decision, base_coin,
                         choose_side, vol_factor, leverage_for, stop_target, partial_targets, maint_margin,
                         liquidation_price, safe_leverage, loss_per_unit, position_qty, decide, exposure_room,
                         correlated_count, liquidity_ok)

CFG = RiskConfig()
EQ = 10_000.0
PX = 60_000.0
LONG = (0.83, 0.05, PX, 0.02, 0.01)       # p_long, p_short, price, up, down


def book(*positions, equity=EQ):
    st = RiskState.start(equity)
    for p in positions: st.open(p, 0)
    return st

def pos(symbol, risk=50.0, margin=100.0, side=1):
    return OpenPosition(symbol, side, 0, HOUR_MS, 1.0, 100.0, 99.0, 1_000.0, margin, risk)

def reason(*args, st=None, cfg=CFG, t=0, symbol="BTCUSDT", **kw):
    return decide(t, symbol, *(args or LONG), book() if st is None else st, cfg, **kw).reason


# --- config ------------------------------------------------------------------------------------------------------

def test_from_config_maps_every_setting():
    c = load_config(env={}, overrides={"signals.cooldown": "2h", "risk.drawdown_pause": "3d", "backtest.taker_fee": 0.0004,
                                       "risk.vol_factor_bounds": [0.25, 4], "risk.partial_take_profits": [[1, 0.5]],
                                       "backtest.slippage_bps": 2.5, "risk.max_coin_exposure": 0.03})
    r = RiskConfig.from_config(c)
    assert (r.cooldown_ms, r.drawdown_pause_ms, r.taker_fee, r.slippage_bps) == (2 * HOUR_MS, 3 * DAY_MS, 0.0004, 2.5)
    assert (r.vol_factor_lo, r.vol_factor_hi, r.partial_take_profits, r.max_coin_exposure) == (0.25, 4, ((1, 0.5),), 0.03)
    assert RiskConfig.from_config(load_config(env={})) == RiskConfig()

def test_from_config_loads_the_defaults_and_takes_overrides():
    r = RiskConfig.from_config(max_leverage=7, partial_take_profits=[[2.0, 0.25]])
    assert r.max_leverage == 7 and r.partial_take_profits == ((2.0, 0.25),)

def test_from_config_refuses_min_above_max_and_unknown_fields():
    with pytest.raises(ConfigError, match="min_stop_distance 0.1 is above max_stop_distance 0.05") as e:
        RiskConfig.from_config(load_config(env={}), min_stop_distance=0.1)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown setting max_levrage"):
        RiskConfig.from_config(load_config(env={}), max_levrage=3)


# --- side --------------------------------------------------------------------------------------------------------

def test_confidence_exactly_at_threshold_is_taken_and_just_below_is_flat():
    assert choose_side(0.8, 0.1, 0.8) == (1, None) and choose_side(0.1, 0.8, 0.8) == (-1, None)
    assert choose_side(math.nextafter(0.8, 0), 0.1, 0.8) == (0, None)
    assert reason(0.8, 0.1, PX, 0.02, 0.01) is None
    assert decide(0, "BTCUSDT", 0.79999, 0.1, PX, 0.02, 0.01, book(), CFG) == Decision(0, None)

def test_both_sides_at_threshold():
    assert choose_side(0.8, 0.8, 0.8) == (0, "both_sides")
    assert reason(0.8, 0.8, PX, 0.02, 0.01) == "both_sides"

@pytest.mark.parametrize("p", [math.nan, -0.01, 1.01, None, "0.9"])
def test_bad_probability(p):
    assert choose_side(p, 0.1, 0.8) == (0, "bad_input") and choose_side(0.1, p, 0.8) == (0, "bad_input")

@pytest.mark.parametrize("args", [(0.9, 0.1, math.nan, 0.02, 0.01), (0.9, 0.1, PX, math.nan, 0.01),
                                  (0.9, 0.1, PX, 0.02, 0.0), (0.9, 0.1, -1.0, 0.02, 0.01)])
def test_bad_price_or_barrier_once_a_side_is_chosen(args):
    d = decide(0, "BTCUSDT", *args, book(), CFG)
    assert (d.side, d.reason, d.wanted) == (0, "bad_input", 1)

def test_base_coin():
    assert [base_coin(s) for s in ("BTCUSDT", "ethusdc", "BTCFDUSD", "BTCBUSD", "BTCUSD_PERP", "USDT")] == \
        ["BTC", "ETH", "BTC", "BTC", "BTC", "USDT"]


# --- volatility and leverage -------------------------------------------------------------------------------------

def test_vol_factor_clamps_and_defaults():
    assert vol_factor(0.02, 0.01) == 0.5 and vol_factor(0.001, 0.01) == 2.0
    assert vol_factor(0.01, 0.01, lo=0.5, hi=2.0) == 1.0 and math.isclose(vol_factor(0.008, 0.01), 1.25)
    assert [vol_factor(a, m) for a, m in [(0, 0.01), (0.01, 0), (math.nan, 0.01), (0.01, math.nan), (None, 1)]] == [1.0] * 5

def test_leverage_for():
    assert [leverage_for(v, 10, 20) for v in (0.5, 0.7, 0.99, 1.0, 1.25, 2.0)] == [5, 7, 9, 10, 12, 20]
    assert leverage_for(0.01, 10, 20) == 1 and leverage_for(2.0, 10, 15) == 15

def test_decision_leverage_follows_volatility():
    lev = [decide(0, "BTCUSDT", *LONG, book(), CFG, atr_pct=a, atr_pct_median=0.005).leverage for a in (0.0025, 0.005, 0.01)]
    assert lev == [20, 10, 5]


# --- stop and target ---------------------------------------------------------------------------------------------

def test_stop_and_target_from_the_label_barriers():
    assert stop_target(100.0, 1, 0.02, 0.01, 0.002, 0.05) == pytest.approx((99.0, 102.0))
    assert stop_target(100.0, -1, 0.02, 0.01, 0.002, 0.05) == pytest.approx((101.0, 98.0))
    d = decide(0, "BTCUSDT", 0.1, 0.85, PX, 0.02, 0.01, book(), CFG)
    assert (d.side, d.stop, d.target) == (-1, pytest.approx(PX * 1.01), pytest.approx(PX * 0.98))

def test_stop_clamped_at_min_and_max_distance():
    assert stop_target(100.0, 1, 0.0001, 0.001, 0.002, 0.05) == pytest.approx((99.8, 100.2))
    assert stop_target(100.0, 1, 0.08, 0.06, 0.002, 0.05) == pytest.approx((95.0, 105.0))
    assert stop_target(100.0, 1, 0.002, 0.05, 0.002, 0.05) == pytest.approx((95.0, 100.2))   # exactly at both ends
    d = decide(0, "BTCUSDT", 0.9, 0.1, PX, 0.02, 0.0001, book(), CFG)
    assert d.stop == pytest.approx(PX * 0.998)
    d = decide(0, "BTCUSDT", 0.1, 0.9, PX, 0.02, 0.2, book(), CFG)
    assert d.stop == pytest.approx(PX * 1.05)

def test_min_above_max_raises():
    with pytest.raises(ValueError, match="min stop distance 0.06 above max"): stop_target(100.0, 1, 0.02, 0.01, 0.06, 0.05)
    with pytest.raises(ValueError, match="min stop distance"):
        decide(0, "BTCUSDT", *LONG, book(), RiskConfig(min_stop_distance=0.06))

def flat(pairs): return [x for p in pairs for x in p]

def test_partial_targets_at_r_multiples():
    assert flat(partial_targets(100.0, 1, 99.0, 103.0, ((2.0, 0.25), (1.0, 0.5)))) == pytest.approx([101.0, 0.5, 102.0, 0.25])
    assert flat(partial_targets(100.0, -1, 101.0, 97.0, ((1.0, 0.5),))) == pytest.approx([99.0, 0.5])
    assert partial_targets(100.0, 1, 99.0, 102.0, ((2.0, 0.5), (3.0, 0.2))) == []      # at or past the target: dropped
    assert partial_targets(100.0, 1, 99.0, 102.0, ()) == []
    with pytest.raises(ValueError, match="sum below 1"): partial_targets(100.0, 1, 99.0, 102.0, ((1.0, 0.5), (1.5, 0.5)))
    d = decide(0, "BTCUSDT", *LONG, book(), RiskConfig(partial_take_profits=((1.0, 0.5),)))
    assert flat(d.partials) == pytest.approx([PX * 1.01, 0.5])


# --- sizing ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side,stop", [(1, 59_400.0), (-1, 60_600.0), (1, 59_880.0), (-1, 63_000.0)])
def test_loss_at_the_stop_with_costs_is_the_risk_budget(side, stop):
    qty, risk = position_qty(EQ, PX, stop, CFG)
    exit_cost = qty * stop * (CFG.taker_fee + CFG.slippage_bps / 1e4)
    entry_cost = qty * PX * (CFG.taker_fee + CFG.slippage_bps / 1e4)
    assert abs(qty * abs(PX - stop) + entry_cost + exit_cost - 0.005 * EQ) < 1e-9 and risk == 0.005 * EQ

def test_decision_risk_amount_is_the_loss_at_the_stop():
    d = decide(0, "BTCUSDT", *LONG, book(), CFG)
    assert abs(d.qty * loss_per_unit(d.entry, d.stop, CFG.taker_fee, CFG.slippage_bps) - 50.0) < 1e-9
    assert d.risk_amount == 50.0 and d.notional == pytest.approx(d.qty * PX) and d.margin == pytest.approx(d.notional / 10)

def test_sizing_degenerate_inputs():
    assert position_qty(0.0, PX, 59_400.0, CFG) == (0.0, 0.0)
    assert position_qty(EQ, PX, 59_400.0, CFG, risk_room=-1.0) == (0.0, 0.0)
    assert position_qty(EQ, PX, PX, RiskConfig(taker_fee=0.0, slippage_bps=0.0)) == (0.0, 0.0)


# --- exposure ----------------------------------------------------------------------------------------------------

def test_exposure_exactly_at_the_portfolio_cap_refuses():
    st = book(*[pos(s, risk=250.0) for s in ("ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")])   # 1,000 = 10%
    assert st.exposure() == 1_000.0 and exposure_room(st, CFG, "BTC") == 0.0
    d = decide(0, "BTCUSDT", *LONG, st, CFG)
    assert (d.side, d.reason, d.wanted, d.qty) == (0, "exposure", 1, 0.0)

def test_room_of_exactly_one_trade_gets_full_size():
    st = book(*[pos(s, risk=237.5) for s in ("ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")])   # 950: room 50
    d = decide(0, "BTCUSDT", *LONG, st, CFG)
    assert d.accepted and d.risk_amount == 50.0
    assert d.qty == pytest.approx(decide(0, "BTCUSDT", *LONG, book(), CFG).qty, rel=1e-12)

def test_partial_room_scales_the_size():
    st = book(*[pos(s, risk=245.0) for s in ("ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT")])   # 980: room 20
    d, full = decide(0, "BTCUSDT", *LONG, st, CFG), decide(0, "BTCUSDT", *LONG, book(), CFG)
    assert d.accepted and d.risk_amount == pytest.approx(20.0) and d.qty == pytest.approx(full.qty * 0.4)

def test_coin_cap():
    st = book(pos("BTCUSDC", risk=300.0), pos("BTCFDUSD", risk=200.0))                      # 500 BTC = 5%
    assert st.exposure("BTC") == 500.0 and st.exposure("ETH") == 0.0
    assert reason(st=st) == "exposure" and reason(st=st, symbol="ETHUSDT") is None
    st = book(pos("BTCUSDC", risk=300.0), pos("BTCFDUSD", risk=170.0))                      # room 30 under the coin cap
    assert decide(0, "BTCUSDT", *LONG, st, CFG).risk_amount == pytest.approx(30.0)


# --- liquidation -------------------------------------------------------------------------------------------------

def test_brackets_and_cum_by_continuity():
    assert MM_BRACKETS[0] == (0, 0.004, 125) and MM_BRACKETS[-1] == (600_000_000, 0.5, 2)
    assert MM_CUMS[:3] == (0.0, 50.0, 3_050.0)
    for k in range(1, len(MM_BRACKETS)):
        f = MM_BRACKETS[k][0]
        lo, hi = f * MM_BRACKETS[k - 1][1] - MM_CUMS[k - 1], f * MM_BRACKETS[k][1] - MM_CUMS[k]
        assert lo == pytest.approx(hi, abs=1e-6), k

def test_bracket_boundary_at_50k():
    assert maint_margin(49_999.999) == (0.004, 0.0, 125)
    assert maint_margin(50_000) == (0.005, 50.0, 100)
    assert maint_margin(10_000_000_000) == (0.5, MM_CUMS[-1], 2)
    assert maint_margin(-50_000) == (0.005, 50.0, 100)

def test_liquidation_price_matches_binance_formula_by_hand():
    qty, lev = 0.1, 20                              # notional 6,000: first bracket, mmr 0.4 %, cum 0
    wb = qty * PX / lev                             # 300
    assert liquidation_price(PX, 1, lev, qty) == pytest.approx((wb + 0 - qty * PX) / (qty * 0.004 - qty), rel=1e-12)
    assert liquidation_price(PX, 1, lev, qty) == pytest.approx(57_228.915662650, rel=1e-12)
    assert liquidation_price(PX, -1, lev, qty) == pytest.approx((wb + 0 + qty * PX) / (qty * 0.004 + qty), rel=1e-12)
    q2 = 1.0                                        # notional 60,000: second bracket, mmr 0.5 %, cum 50
    assert liquidation_price(PX, 1, 10, q2) == pytest.approx((6_000 + 50 - 60_000) / (0.005 - 1), rel=1e-12)

def test_liquidation_inside_the_stop_lowers_leverage():
    stop = PX * 0.95
    before = liquidation_price(PX, 1, 20, 0.1)
    lev = safe_leverage(PX, 1, stop, 20, 0.1)
    after = liquidation_price(PX, 1, lev, 0.1)
    assert before > stop and lev == 18 and after < stop and liquidation_price(PX, 1, 19, 0.1) >= stop
    assert (round(before, 2), round(after, 2)) == (57_228.92, 56_894.24)
    stop_s = PX * 1.05
    lev_s = safe_leverage(PX, -1, stop_s, 20, 0.1)
    assert liquidation_price(PX, -1, 20, 0.1) < stop_s and lev_s == 18 and liquidation_price(PX, -1, lev_s, 0.1) > stop_s

def test_decision_lowers_leverage_when_liquidation_is_inside_the_stop():
    d = decide(0, "BTCUSDT", 0.9, 0.1, PX, 0.02, 0.05, book(), CFG, atr_pct=0.001, atr_pct_median=0.01)   # wants 20x
    assert d.accepted and d.leverage == 18 and d.liq_price < d.stop
    assert d.liq_price == pytest.approx(liquidation_price(PX, 1, 18, d.qty))

def test_safe_leverage_caps_and_floor():
    assert safe_leverage(PX, 1, 59_880.0, 100, 20.0) == 75          # notional 1.2M: bracket cap 75x
    assert safe_leverage(PX, 1, 20_000.0, 20, 0.1) == 1             # never below 1
    assert safe_leverage(PX, 1, 59_400.0, 0, 0.1) == 1
    assert liquidation_price(PX, 1, 1, 0.1) == 0.0                  # a 1x long cannot be liquidated


# --- margin ------------------------------------------------------------------------------------------------------

def test_margin_refusal():
    need = decide(0, "BTCUSDT", *LONG, book(), CFG).margin
    assert reason(st=book(pos("ETHUSDT", risk=1.0, margin=EQ - need))) is None          # exactly equity: accepted
    assert reason(st=book(pos("ETHUSDT", risk=1.0, margin=EQ - need + 0.01))) == "margin"


# --- correlation -------------------------------------------------------------------------------------------------

def test_correlation_count_max_minus_one_accepted_and_max_refused():
    others = ["ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"]
    corr = {s: 0.7 for s in others} | {"BNBUSDT": 0.69, "LTCUSDT": math.nan}
    small = [pos(s, risk=1.0, margin=1.0) for s in others[:4] + ["BNBUSDT", "LTCUSDT"]]
    st = book(*small)
    assert correlated_count("BTCUSDT", corr, st, 0.7) == 4
    assert reason(st=st, corr=corr) is None
    st = book(*small, pos("DOGEUSDT", risk=1.0, margin=1.0))
    assert reason(st=st, corr=corr) == "correlation" and reason(st=st, corr=None) is None
    assert correlated_count("ETHUSDT", {"ETHUSDT": 1.0}, book(pos("ETHUSDT")), 0.7) == 0


# --- state rules -------------------------------------------------------------------------------------------------

def test_open_position_and_cooldown_boundary():
    st = book()
    d = decide(0, "BTCUSDT", *LONG, st, CFG)
    st.open(d.to_position("BTCUSDT", SECOND_MS, 4 * HOUR_MS), 0)
    assert reason(st=st, t=HOUR_MS) == "open_position" and reason(st=st, t=HOUR_MS, symbol="ETHUSDT") is None
    with pytest.raises(ValueError, match="already has an open position"): st.open(pos("BTCUSDT"), 5)
    closed = st.close("BTCUSDT")
    assert closed.qty == d.qty and closed.risk_amount == d.risk_amount and st.positions == {}
    assert reason(st=st, t=HOUR_MS - SECOND_MS) == "cooldown"
    assert reason(st=st, t=HOUR_MS) is None

def test_high_volatility():
    assert reason(atr_pct=0.0501) == "high_volatility"
    assert reason(atr_pct=0.05) is None and reason(atr_pct=math.nan) is None and reason(atr_pct=None) is None

def test_drawdown_pause_starts_at_minus_20_holds_and_ends_with_peak_reset():
    st, t0 = RiskState.start(EQ, 0), 3 * HOUR_MS
    st.mark(12_000.0, HOUR_MS, CFG)
    st.mark(9_600.0 + 1e-6, 2 * HOUR_MS, CFG)
    assert st.pause_reason is None and st.drawdown_until_ms == 0
    st.mark(9_600.0, t0, CFG)                                      # exactly -20 % of the 12,000 peak
    assert (st.pause_reason, st.pause_until_ms) == ("drawdown_pause", t0 + 7 * DAY_MS)
    assert reason(st=st, t=t0) == "drawdown_pause"
    st.mark(9_000.0, t0 + DAY_MS, CFG)                             # deeper while paused: the pause does not grow
    assert st.pause_until_ms == t0 + 7 * DAY_MS and st.peak == 12_000.0
    assert reason(st=st, t=t0 + 7 * DAY_MS - 1) == "drawdown_pause"
    st.mark(9_100.0, t0 + 7 * DAY_MS, CFG)                         # the pause ends: peak resets
    assert (st.peak, st.pause_reason, st.drawdown_until_ms) == (9_100.0, None, 0)
    assert reason(st=st, t=t0 + 7 * DAY_MS) is None

def test_daily_loss_pauses_until_next_utc_midnight():
    st, t = RiskState.start(EQ), 2 * DAY_MS + 5 * HOUR_MS
    st.mark(EQ, 2 * DAY_MS, CFG)
    assert st.day == 2 and st.day_start == EQ
    st.mark(9_500.0, t, CFG)                                       # exactly -5 % of the day
    assert (st.pause_reason, st.pause_until_ms) == ("daily_loss_pause", 3 * DAY_MS)
    assert reason(st=st, t=3 * DAY_MS - 1) == "daily_loss_pause"
    st.mark(9_400.0, 3 * DAY_MS, CFG)                              # a new day: day_start resets
    assert (st.day, st.day_start, st.pause_reason) == (3, 9_400.0, None)
    assert reason(st=st, t=3 * DAY_MS) is None

def test_a_pause_never_shortens_one_in_force():
    cfg = replace(CFG, drawdown_pause_ms=2 * HOUR_MS)
    st = RiskState.start(EQ, 0)
    st.mark(7_900.0, HOUR_MS, cfg)                                 # both: drawdown to 3h, daily loss to midnight
    assert (st.pause_reason, st.pause_until_ms, st.drawdown_until_ms) == ("daily_loss_pause", DAY_MS, 3 * HOUR_MS)
    assert reason(st=st, t=2 * HOUR_MS, cfg=cfg) == "drawdown_pause"
    st.mark(7_900.0, 3 * HOUR_MS, cfg)
    assert st.peak == 7_900.0 and reason(st=st, t=3 * HOUR_MS, cfg=cfg) == "daily_loss_pause"
    st = RiskState.start(EQ, 0)
    st.mark(9_500.0, HOUR_MS, CFG)
    st.mark(8_000.0, 2 * HOUR_MS, CFG)                             # a longer drawdown pause replaces the daily one
    assert (st.pause_reason, st.pause_until_ms) == ("drawdown_pause", 2 * HOUR_MS + 7 * DAY_MS)


# --- liquidity ---------------------------------------------------------------------------------------------------

def test_low_liquidity_each_filter_and_none_skips():
    n = decide(0, "BTCUSDT", *LONG, book(), CFG).notional
    assert reason(spread_bps=10.0) is None and reason(spread_bps=10.01) == "low_liquidity"
    assert reason(depth_notional=2 * n) is None and reason(depth_notional=2 * n * 0.999) == "low_liquidity"
    assert reason(quote_volume=n / 0.1) is None and reason(quote_volume=n / 0.1 * 0.999) == "low_liquidity"
    assert reason(spread_bps=None, depth_notional=None, quote_volume=None) is None
    assert liquidity_ok(n, CFG) and not liquidity_ok(n, CFG, spread_bps=50)


# --- the order of the checks and the decision --------------------------------------------------------------------

def test_reasons_and_their_order():
    assert REASONS == ("bad_input", "both_sides", "drawdown_pause", "daily_loss_pause", "open_position", "cooldown",
                       "high_volatility", "correlation", "exposure", "margin", "low_liquidity")
    st = book(pos("BTCUSDT"))
    st.drawdown_until_ms = HOUR_MS
    kw = dict(atr_pct=0.5, spread_bps=99.0)
    assert reason(st=st, **kw) == "drawdown_pause"
    st.drawdown_until_ms = 0
    assert reason(st=st, **kw) == "open_position"
    assert reason(st=book(pos("ETHUSDT", risk=1_000.0)), **kw) == "high_volatility"
    assert reason(st=book(pos("ETHUSDT", risk=1_000.0)), spread_bps=99.0) == "exposure"
    assert reason(st=book(pos("ETHUSDT", risk=1.0, margin=EQ)), spread_bps=99.0) == "margin"

def test_accepted_decision_and_state_untouched():
    st = book()
    d = decide(0, "BTCUSDT", *LONG, st, CFG, atr_pct=0.004, atr_pct_median=0.005)
    assert d.accepted and (d.side, d.wanted, d.leverage, d.vol_factor) == (1, 1, 12, 1.25)
    assert st.positions == {} and st.last_entry_ms == {}
    p = d.to_position("BTCUSDT", SECOND_MS, 4 * HOUR_MS)
    assert (p.side, p.qty, p.stop, p.target, p.leverage, p.margin) == (1, d.qty, d.stop, d.target, 12, d.margin)
    assert not Decision(0, None).accepted and not Decision(0, "cooldown").accepted
