"""`mltrader init`: a starter project for a pip-installed user (the shipped configs, a README
of every config key generated from the config model itself, an .env template).

The configs are package data (``mltrader/configs/*.yaml``), so the examples work without
the repository; the README is generated from `RunConfig`, so it cannot drift from the keys
the validator accepts.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mltrader.config import RunConfig
from mltrader.errors import MltraderError

ENV_TEMPLATE = """\
# mltrader reads secrets only from the environment or this file (copy it to .env).
# Never commit .env; mltrader never writes these values to logs, journals or run folders.

# Alpaca (paper keys for the paper account; `mltrader live --broker alpaca`)
MLTRADER_ALPACA_KEY=
MLTRADER_ALPACA_SECRET=

# Alpha Vantage (`data.source: alphavantage`, `mltrader data fetch --source alphavantage`)
MLTRADER_ALPHAVANTAGE_KEY=

# Interactive Brokers: TWS / IB Gateway with the API enabled. `data fetch --source ib`
# connects as client 17; a trading bot's --ib-client-id defaults to 1.
MLTRADER_IB_HOST=127.0.0.1
MLTRADER_IB_PORT=7497
MLTRADER_IB_CLIENT_ID=17

# Where fetched bars are cached (default ~/.cache/mltrader)
# MLTRADER_CACHE_DIR=
"""

README_HEAD = """\
# mltrader project

Made by `mltrader init`. Start with:

```bash
mltrader backtest -c configs/default.yaml            # LightGBM, walk-forward, vs buy-and-hold
mltrader backtest -c configs/crossover.yaml --data prices.csv   # your own prices, no model
mltrader backtest -c configs/default.yaml --smoke     # a quick check that a config runs
mltrader backtest -c configs/default.yaml --first-test-year 2012 --set costs.slippage_bps=10
mltrader compare -c configs/compare.yaml             # several models on the same folds
mltrader strategies                                  # the rules and their parameters
```

Every run writes `runs/<timestamp>-<name>/` (config, metrics, trades, report.html).
Secrets go in `.env` (copy `.env.example`).

## Configs

{configs}

## Every config key

Each key is checked when the config loads: a typo is an error naming the key and the allowed
ones. Any key can also be set on the command line: `--set section.key=value` (the value in
YAML syntax, checked like the file).

{keys}
"""


@dataclass(frozen=True)
class InitResult:
    """What `init` wrote, and what it left alone because it was there already."""

    root: Path
    written: tuple[Path, ...]
    kept: tuple[Path, ...]


def shipped_configs() -> dict[str, str]:
    """The shipped example configs: file name -> YAML text (from the installed package)."""
    folder = resources.files("mltrader") / "configs"
    return {f.name: f.read_text(encoding="utf-8") for f in sorted(
        folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".yaml")}


def _type_name(ann: Any) -> str:
    """A short readable type: ``int | None`` -> ``int or null``, Literals as their values."""
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " / ".join(str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a)
                           for a in typing.get_args(ann))
    if origin in (list, tuple):
        args = typing.get_args(ann)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(ann, "__name__", str(ann))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "unset"
    return f"`{value}`" if not isinstance(value, list | dict) or value else "empty"


def config_keys_markdown() -> str:
    """A table per config section: key, type, default, meaning (from the pydantic model)."""
    parts = []

    def section(model: type[BaseModel], prefix: str) -> None:
        rows, subs = [], []
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                subs.append((ann, f"{prefix}{name}."))
                continue
            desc = (field.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {_type_name(ann)} | {_default(field)} | {desc} |")
        title = prefix.rstrip(".") or "top level"
        doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
        parts.append(f"### {title}\n\n{doc}\n\n| key | type | default | meaning |\n"
                     "| --- | --- | --- | --- |\n" + "\n".join(rows))
        for sub, p in subs:
            section(sub, p)

    section(RunConfig, "")
    parts.append("### strategy parameters\n\nEvery other key under `strategy:` is a parameter "
                 "of the chosen strategy; `mltrader strategies` lists them with defaults.")
    return "\n\n".join(parts)


def _config_summary(configs: dict[str, str]) -> str:
    lines = []
    for name, text in configs.items():
        head = []
        for ln in text.splitlines():  # the leading comment's first sentence
            if not ln.startswith("#"):
                break
            head.append(ln.lstrip("#").strip())
        words = " ".join(head)
        first = words.split(". ")[0].rstrip(".")
        lines.append(f"- `configs/{name}`: {first}.")
    return "\n".join(lines)


def init_project(root: Path, force: bool = False) -> InitResult:
    """Write the starter files under ``root``; existing files are kept unless ``force``."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise MltraderError(f"{root} is a file; give a folder for the new project")
    configs = shipped_configs()
    files = {Path("configs") / n: t for n, t in configs.items()}
    files[Path("README.md")] = README_HEAD.format(configs=_config_summary(configs),
                                                  keys=config_keys_markdown())
    files[Path(".env.example")] = ENV_TEMPLATE
    written, kept = [], []
    try:
        (root / "configs").mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            path = root / rel
            if path.exists() and not force:
                kept.append(path)
                continue
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as e:
        raise MltraderError(f"cannot write the project to {root} ({e.strerror or e}); choose "
                            "a writable folder") from None
    return InitResult(root, tuple(written), tuple(kept))
