"""Every validator of the config schema, exercised: each key refuses a value of the right type that breaks its rule,
with one line naming the key and where the value came from (issue 10, item 6)."""
import subprocess
import pytest
from futbot.config import SCHEMA, ConfigError, load_config, env_key

# One value per key: the right type, outside the rule. A new SCHEMA key must add its case here.
BAD = {
    "data.history_months": 0, "data.timeframes": ["1m", "7m"], "data.base_timeframe": "7m",
    "data.symbols": ["btcusdt"], "signals.min_confidence": 0.4, "signals.cooldown": "soon",
    "risk.max_leverage": 126, "risk.recommended_leverage": 0.5, "risk.stop_atr_mult": 0,
    "risk.risk_per_trade": 0.2, "risk.max_portfolio_exposure": 1.5, "risk.max_correlated_positions": 0,
    "risk.max_drawdown": 0, "monitoring.performance_check_interval": "hourly", "monitoring.drift_window": "a week",
    "monitoring.degradation_alert": 2, "monitoring.health_check_interval": "-30s",
    "labels.kind": "quaternary", "labels.horizon": "4 hours", "labels.profit_threshold": 0,
    "labels.stop_threshold": 1.5, "labels.atr_mult": 25, "training.seed": -1, "training.split": [0.7, 0.2, 0.2],
    "training.walk_forward_folds": 1, "training.n_trials": -1, "selection.min_precision": 0,
    "selection.min_sharpe": -11, "selection.max_drawdown": 1.2, "selection.max_calibration_error": 0,
    "features.pandas_ta": [{"kind": "kamma"}], "labels.barriers": "atr14",
    "risk.max_coin_exposure": 0, "risk.correlation_threshold": 1.5, "risk.correlation_window": "weekly",
    "risk.min_stop_distance": 0, "risk.max_stop_distance": 1.0, "risk.vol_window": "7 days",
    "risk.vol_factor_bounds": [1.5, 2.0], "risk.max_atr_pct": 0, "risk.max_spread_bps": 0,
    "risk.min_depth_ratio": -1, "risk.max_volume_share": 1.5, "risk.max_daily_loss": 0, "risk.drawdown_pause": "0s",
    "risk.partial_take_profits": [[1.0, 0.6], [2.0, 0.5]],
    "backtest.initial_equity": 0, "backtest.taker_fee": 0.05, "backtest.maker_fee": -0.05, "backtest.slippage": "random",
    "backtest.slippage_bps": -1, "backtest.slippage_vol_mult": -0.1, "backtest.impact_coef": -1,
    "backtest.latency": "-1s", "backtest.funding": "yes", "backtest.periods_per_year": 0, "backtest.metrics_freq": "daily",
    "backtest.var_level": 1.0, "backtest.rolling_window": "0d",
    "training.models": ["lgbm", "svm"], "training.cv_mode": "sliding", "training.uniqueness_weights": "yes",
    "training.storage": "artifacts/optuna.db", "training.corr_threshold": 0, "training.features": [], "training.max_features": -1, "training.max_drift": 0,
    "training.rfe": "no", "training.calibration": "sigmoid", "training.seq_len": 1,
    "selection.min_dsr": 1.5, "selection.min_trades": -1, "selection.challenger_margin": -0.1,
    "monitoring.win_rate_alert": 0, "monitoring.performance_window": "weekly", "monitoring.min_trades": 0,
    "monitoring.significance": 0.5, "monitoring.psi_warn": 0, "monitoring.psi_act": -1, "monitoring.min_drift_rows": 5,
    "monitoring.drift_share": 1.5, "monitoring.drift_alert_level": "error", "monitoring.auto_retrain": "yes",
    "monitoring.retrain_cooldown": "daily",
    "monitoring.min_disk_free_gb": -1, "monitoring.max_rss_mb": 0,
    "alerts.channels": ["log", "pager"], "alerts.store": " ", "alerts.min_interval": "hourly", "alerts.max_per_hour": 0,
    "alerts.retries": -1, "alerts.retry_backoff": "soon", "alerts.timeout": "0s",
    "alerts.webhook_url_env": "https://hooks.example/T000", "alerts.smtp_host": "", "alerts.smtp_port": 0,
    "alerts.smtp_starttls": "yes", "alerts.email_from": "futbot", "alerts.email_to": ["ops"],
}

def test_every_key_has_a_bad_case():
    assert set(BAD) == set(SCHEMA), f"add a bad value for: {sorted(set(SCHEMA) - set(BAD))}"

@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_validator_refuses_and_names_the_key(key):
    with pytest.raises(ConfigError) as e: load_config(env={}, overrides={key: BAD[key]})
    msg = str(e.value)
    assert msg.count("\n") == 0 and key in msg and f"override {key}" in msg, msg

@pytest.mark.parametrize("key", sorted(SCHEMA))
def test_validator_refuses_a_wrong_type(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")): load_config(env={}, overrides={key: {"not": "it"}})

def test_base_timeframe_must_be_one_of_the_timeframes():
    with pytest.raises(ConfigError, match="data.base_timeframe '15m' must be one of data.timeframes"):
        load_config(env={}, overrides={"data.base_timeframe": "15m"})
    assert load_config(env={}, overrides={"data.base_timeframe": "1h"})["data.base_timeframe"] == "1h"

def test_split_fractions_sum_to_one():
    with pytest.raises(ConfigError, match="three positive fractions summing to 1"):
        load_config(env={}, overrides={"training.split": [0.7, 0.15, 0.1]})
    assert load_config(env={}, overrides={"training.split": [0.6, 0.2, 0.2]})["training.split"] == [0.6, 0.2, 0.2]

def test_stop_distances_are_checked_together():
    with pytest.raises(ConfigError, match="risk.min_stop_distance 0.06 is above risk.max_stop_distance 0.05"):
        load_config(env={}, overrides={"risk.min_stop_distance": 0.06})
    assert load_config(env={}, overrides={"risk.min_stop_distance": 0.05})["risk.min_stop_distance"] == 0.05

def test_partial_take_profits_are_pairs():
    for bad in ([[1.0]], [[0, 0.5]], [[1.0, 1.0]], [["1R", 0.5]], [[1.0, True]]):
        with pytest.raises(ConfigError, match="risk.partial_take_profits"):
            load_config(env={}, overrides={"risk.partial_take_profits": bad})
    assert load_config(env={}, overrides={"risk.partial_take_profits": [[1, 0.3], [2, 0.3]]}).risk.partial_take_profits

def test_funding_is_a_yaml_boolean():
    assert load_config(env={env_key("backtest.funding"): "false"}).backtest.funding is False
    with pytest.raises(ConfigError, match="backtest.funding must be true or false"):
        load_config(env={env_key("backtest.funding"): "1"})

def test_env_values_are_checked_like_files():
    with pytest.raises(ConfigError, match=f"environment {env_key('training.split')}"):
        load_config(env={env_key("training.split"): "[0.5, 0.5, 0.5]"})

def test_unknown_futbot_variable_is_named_in_one_line(futbot_cmd):
    import os
    env = dict(os.environ, FUTBOT_RISK__MAX_LEVRAGE="3")
    r = subprocess.run([futbot_cmd, "train"], capture_output=True, text=True, env=env, timeout=60)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "FUTBOT_RISK__MAX_LEVRAGE" in lines[0] and "did you mean FUTBOT_RISK__MAX_LEVERAGE" in lines[0], lines[0]
