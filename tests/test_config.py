from pathlib import Path

import pytest
from pydantic import ValidationError

from mltrader.config import RunConfig, config_from_dict, dump_config, load_config
from mltrader.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_file_is_valid_and_matches_defaults():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.model.name == "lightgbm"
    assert cfg.walk_forward.first_test_year == 2005
    assert cfg.data.dataset == "sp500_20stocks"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"modle": {}}, "unknown key 'modle'"),
        ({"model": {"nam": "ridge"}}, "unknown key 'model.nam'"),
        ({"strategy": {"threshhold": 0.1}}, "unknown key 'strategy.threshhold'"),
        ({"strategy": {"threshold": -0.1}}, "strategy.threshold"),
        ({"model": {"name": "gpt"}}, "model.name"),
        ({"walk_forward": {"window": "rolling"}}, "train_years"),
        ({"data": {"source": "file"}}, "data.path is not set"),
        ({"data": {"start": "2010-01-01", "end": "2000-01-01"}}, "is after data.end"),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(raw, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "my.yaml")
    msg = str(info.value)
    assert needle in msg
    assert msg.startswith("my.yaml")
    assert "\n" not in msg


def test_unknown_key_message_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed here: name, params"):
        config_from_dict({"model": {"nam": "ridge"}})


def test_bad_yaml_names_the_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: ridge\n   params: {}\n")
    with pytest.raises(ConfigError, match="line 3"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_and_roundtrip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    cfg = load_config(p, {"model.name": "ridge", "data.symbols": ["AAPL"]})
    assert cfg.model.name == "ridge" and cfg.data.symbols == ["AAPL"]
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


def test_config_is_frozen():
    cfg = RunConfig()
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]


def test_every_shipped_config_loads() -> None:
    """Each example in configs/ is valid (a key typo there would greet every new user)."""
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        cfg = load_config(path)
        assert cfg.name, path
    live = {p.stem: load_config(p).data.source for p in files if p.stem.startswith("live-")}
    assert live == {"live-alpaca": "alpaca", "live-ib": "ib"}
