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


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("strategy: {name: crossover, fast: 3\nslow: [", "line 2, column 5",
         "expected ',' or '}', but got ':'"),
        ("model:\n  name: ridge\n   params: {}\n", "line 3, column 10",
         "mapping values are not allowed here"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1",
         "expected a single document in the stream but found another document"),
        ('name: "x\x00"\n', "line 1, column 9", "control character #x0000 is not allowed"),
    ],
    ids=["unclosed-flow", "bad-indent", "two-documents", "control-char"],
)
def test_invalid_yaml_is_one_line_with_line_and_column(tmp_path, text, where, problem):
    """Regression: the raw PyYAML message spanned four lines (and a reader error two)."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg == f"{p}: invalid YAML at {where}: {problem}; fix the syntax"
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# nothing here\n# model: {name: ridge}\n",
                                  "---\n", "~\n"],
                         ids=["zero-bytes", "blank-lines", "only-comments", "bare-marker",
                              "null"])
def test_empty_config_file_is_an_error(tmp_path, text):
    """Regression: an empty file silently ran the default config."""
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p, {"model.name": "ridge"})  # overrides do not make it a config
    msg = str(info.value)
    assert msg.startswith(f"{p} is empty") and "configs/default.yaml" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text", ["0\n", "false\n", "[]\n", "''\n"])
def test_falsy_document_is_not_the_default_config(tmp_path, text):
    """Regression: `yaml.safe_load(...) or {}` turned 0 / false / [] / '' into defaults."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping of keys at the top level"):
        load_config(p)


def test_config_that_is_not_utf8_text_is_one_line(tmp_path):
    """Regression: a binary file escaped as UnicodeDecodeError ("internal error")."""
    p = tmp_path / "c.yaml"
    p.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match=r"not a text \(UTF-8\) file, byte 0"):
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
