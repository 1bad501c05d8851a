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
    "training.walk_forward_folds": 1, "training.n_trials": 0, "selection.min_precision": 0,
    "selection.min_sharpe": -11, "selection.max_drawdown": 1.2, "selection.max_calibration_error": 0,
    "features.pandas_ta": [{"kind": "kamma"}],
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
