"""Run configuration: one YAML file, validated by pydantic so a typo is an error naming the key."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mltrader.errors import ConfigError

DEFAULT_FEATURES = (
    "ret_1", "ret_5", "ret_20",
    "sma_ratio_20", "sma_ratio_50", "sma_ratio_200",
    "vol_20", "vol_60", "rsi_14",
)


class _CodeLoader(yaml.SafeLoader):
    """YAML that keeps numbers written with leading zeros as text: `000651` is the stock code,
    not the octal number 425 that YAML 1.1 would make of it."""


_CodeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:int"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_CodeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?(?:[1-9][0-9_]*|0)|0x[0-9a-fA-F_]+|0b[01_]+)$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse YAML as configs are read: like `yaml.safe_load`, but `000651` stays text."""
    return yaml.load(text, Loader=_CodeLoader)  # noqa: S506 (a SafeLoader subclass)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Strict):
    """Where the bars come from and which part of them to use."""

    source: Literal["bundled", "csv", "parquet", "file", "yahoo", "alphavantage", "alpaca",
                    "ib", "akshare"] = "bundled"
    dataset: str = Field("sp500_20stocks", description="bundled dataset name (source: bundled)"
                         "; ashare_csi300 for the A-share stocks (with market: cn_a)")
    adjust: Literal["qfq", "hfq", "none"] = Field(
        "qfq", description="A-shares (market: cn_a): the prices signals see: qfq forward-"
        "adjusted, hfq backward-adjusted, none; orders always fill at the real traded price")
    path: Path | None = Field(None, description="file to load (source: csv / parquet / file)")
    symbols: list[str] | Literal["all"] = Field("all", description="the universe, e.g. "
                                                "[AAPL, MSFT]; all: every symbol of the data")
    start: dt.date | None = Field(None, description="first date to load (YYYY-MM-DD)")
    end: dt.date | None = Field(None, description="last date to load (YYYY-MM-DD)")
    fallback: list[Literal["yahoo", "alphavantage", "alpaca", "ib"]] = Field(
        default_factory=list, description="network sources tried in order when `source` fails")
    interval: Literal["1m", "5m", "15m", "30m", "1h", "1d", "1wk", "1mo"] | None = Field(
        None, description="the bars' interval; unset: detected for a file (a stated one is "
        "checked against the file), 1d for a network source")
    adjusted: bool = Field(True, description="split- and dividend-adjusted prices (network)")
    cache: bool = Field(True, description="keep fetched bars in the local Parquet cache")
    clean: Literal["none", "drop", "ffill"] = Field(
        "none", description="drop bad bars, or forward-fill missing sessions (counts reported)")
    calendar: str | None = Field(
        None, description="exchange-calendars code (XNYS, XLON, XSHG, ...), \"24/7\" or "
        "\"24/5\"; default from the symbols' suffix (.HK -> XHKG, BTC-USD -> 24/7, else XNYS)")

    @field_validator("symbols", mode="before")
    @classmethod
    def _codes_as_text(cls, v: Any) -> Any:
        """A-share codes written as numbers (600519) become text ("600519")."""
        if isinstance(v, list):
            return [str(s) if isinstance(s, int) and not isinstance(s, bool) else s for s in v]
        return v

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from mltrader.data.calendars import MarketCalendar  # lazy: keeps config import light
        from mltrader.errors import DataError

        try:
            return MarketCalendar(v).name
        except DataError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _path_needed(self) -> DataConfig:
        network = self.source in ("yahoo", "alphavantage", "alpaca", "ib", "akshare")
        if network and (self.symbols == "all" or self.start is None):
            raise ValueError(f"data.source is {self.source!r}: list the symbols and a start "
                             "date, e.g. `symbols: [AAPL, MSFT]` and `start: 2015-01-01`")
        if self.fallback and not network:
            raise ValueError("data.fallback lists network sources to try after a network "
                             "`source`; set source: yahoo (or alphavantage, alpaca, ib)")
        if network and self.interval in ("30m", "1wk", "1mo"):
            raise ValueError(f"data.interval {self.interval} is for files (30-minute, weekly "
                             "or monthly bars); network sources fetch 1m, 5m, 15m, 1h or 1d "
                             "bars")
        if self.interval not in (None, "1d") and self.source == "bundled":
            raise ValueError("data.interval applies to network sources and files (the "
                             "file's declared interval); bundled sets are daily")
        if not network and self.source != "bundled" and self.path is None:
            raise ValueError(f"data.source is {self.source!r} but data.path is not set; "
                             "add `path: my_prices.csv`")
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"data.start {self.start} is after data.end {self.end}")
        return self

    @property
    def bar_interval(self) -> str:
        """The interval to fetch or poll: data.interval, 1d when unset."""
        return self.interval or "1d"


class TuneConfig(_Strict):
    """Optuna (TPE) search on the first training window, with purged, embargoed k-fold CV.

    `space` maps a parameter to ["int" | "int_log" | "float" | "float_log", low, high] or
    ["categorical", [choices]]; the best parameters are then used in every fold.
    """

    n_trials: int = Field(20, ge=1, le=1000)
    space: dict[str, list[Any]] = Field(min_length=1)
    cv_splits: int = Field(5, ge=2, le=20)
    score: Literal["ic", "mse"] = "ic"
    parallel_trials: int = Field(1, ge=1, le=64, description=(
        "trials asked at once before their scores are told; more than 1 lets more units "
        "(trial x CV fold fits) run at once, but TPE then proposes each batch without the "
        "scores of its own batch, so results depend on this number, never on the executor"))


class ModelConfig(_Strict):
    """Which registered model to train (`mltrader backtest --help` lists them) and its
    hyper-parameters."""

    name: str = Field("lightgbm", description="lightgbm, ridge, linear, decision_tree, "
                      "random_forest, svm, lightgbm_classifier, logistic, svm_classifier")
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(None, description="name in the leaderboard (default: name)")
    window: int = Field(60, ge=5, le=500, description="bars per sample (lstm, cnn, cnn_lstm)")
    tune: TuneConfig | None = None
    inputs: list[str] = Field(default_factory=list, description=(
        "labels of this run's other models whose out-of-sample predictions this model also "
        "sees as inputs (stacking, e.g. the ensemble's RL agent reading the LSTM and CNN); "
        "those models are walked forward `nested_years` earlier, so this model trains on "
        "their out-of-sample predictions only"))
    nested_years: int = Field(3, ge=1, le=30, description=(
        "with inputs: years of the input models' out-of-sample predictions before the first "
        "test year that this model's first fold trains on"))
    add_features: list[str] = Field(default_factory=list, description=(
        "in `compare`: features this entry sees besides the run's `features` (the same "
        "model with and without, e.g. news_score, on the same folds)"))

    @field_validator("name")
    @classmethod
    def _registered(cls, v: str) -> str:
        from mltrader.models.registry import MODELS  # lazy: keeps config import light

        if v not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join(MODELS)}")
        return v


class TargetConfig(_Strict):
    """What the model learns: the forward return (or its sign) over `horizon` bars.

    The return runs from the fill after the decision (t+1) to `horizon` bars later, under
    the run's execution convention; classifiers learn its sign and their P(up) - 0.5 is
    the signal the strategy thresholds; `price` learns the price itself, and the prediction
    becomes an expected return against the decision bar's close.
    """

    kind: Literal["return", "direction", "price"] = "return"
    horizon: int = Field(1, ge=1, le=60)
    cross_section: Literal["none", "rank", "zscore"] = Field(
        "none", description="train on each bar's returns ranked (or z-scored) across the "
        "symbols, as Qlib's CSRankNorm: the model learns which stock beats the others, not the "
        "market's move; its predictions are then scores for a ranking rule (topk), not returns")

    @model_validator(mode="after")
    def _cs_needs_returns(self) -> TargetConfig:
        if self.cross_section != "none" and self.kind != "return":
            raise ValueError("target.cross_section ranks returns; use it with kind: return")
        return self


DEFAULT_FIRST_TEST_YEAR = 2005


class WalkForwardConfig(_Strict):
    """Out-of-sample protocol: train on the past, predict the next period, roll forward."""

    first_test_year: int | None = Field(
        None, ge=1900, le=2100, description="first out-of-sample year; unset: 2005 for a model, "
        "and a rule without a model is judged from the first bar its indicators exist")
    retrain: Literal["yearly", "quarterly", "monthly"] = "yearly"
    window: Literal["expanding", "rolling"] = "expanding"
    train_years: float | None = Field(None, gt=0, description="rolling window length in years")
    min_train_rows: int = Field(500, ge=10)
    embargo_bars: int = Field(0, ge=0, description="extra bars dropped beyond the label horizon")

    @model_validator(mode="after")
    def _rolling_needs_length(self) -> WalkForwardConfig:
        if self.window == "rolling" and self.train_years is None:
            raise ValueError("walk_forward.window is 'rolling' but train_years is not set; "
                             "add e.g. `train_years: 10`")
        return self

    @property
    def test_year(self) -> int:
        """The first out-of-sample year of a model run (the default when unset)."""
        return self.first_test_year or DEFAULT_FIRST_TEST_YEAR


class StrategyConfig(BaseModel):
    """Which registered strategy turns predictions into target weights, and its parameters.

    Every key besides `name`, `models` and `regimes` is a parameter of the strategy, checked
    by the strategy's own parameter model (`mltrader strategies` lists them).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field("threshold", description="threshold, crossover, regime_filter, "
                      "ensemble, topk, or a registered user strategy")
    models: list[ModelConfig] = Field(
        default_factory=list, description="extra models whose predictions the strategy uses "
        "(e.g. the ensemble's members), keyed by label or name")
    regimes: Literal["rolling", "hmm"] = Field(
        "rolling", description="rolling: 60-bar return x volatility states; hmm: a Gaussian "
        "HMM fit walk-forward (market level)")

    @property
    def params(self) -> dict[str, Any]:
        """The strategy's own parameters (every extra key)."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known(self) -> StrategyConfig:
        from mltrader.strategy.registry import STRATEGIES  # lazy: keeps config import light

        if self.name not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.name!r}; choose one of "
                             f"{', '.join(STRATEGIES)}")
        spec = STRATEGIES[self.name]
        allowed = list(spec.params.model_fields)
        for key in self.params:
            if key not in allowed:
                keys = ", ".join(["name", "models", "regimes", *allowed])
                raise ValueError(f"unknown key 'strategy.{key}' for strategy {self.name!r}; "
                                 f"check the spelling (allowed here: {keys})")
        try:
            spec.params.model_validate(self.params)
        except ValidationError as err:
            e = err.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            got = e.get("input")
            raise ValueError(f"strategy.{loc}: {e['msg'].removeprefix('Value error, ')} "
                             f"(got {got!r})") from None
        return self


class RiskConfig(_Strict):
    """Sizing, exits and guards: one set of rules for the backtest and the live runner.

    Sizing turns the strategy's weights into positions: `weights` (as the strategy says),
    `percent_of_equity` (`percent` each), `fixed_shares` (`shares` each),
    `risk_per_trade` (equity x risk_per_trade / stop distance; needs stop_loss) or
    `volatility_target` (weight x target_vol / the symbol's trailing volatility).
    Caps scale positions down; guards block or flatten; every action is in the report.
    """

    stop_loss: float | None = Field(None, gt=0, lt=1, description="e.g. 0.03 = 3% below entry")
    take_profit: float | None = Field(None, gt=0, lt=10)
    trailing_stop: float | None = Field(None, gt=0, lt=1)
    time_stop: int | None = Field(None, ge=1, description="close a position N bars after entry")
    sizing: Literal["weights", "percent_of_equity", "fixed_shares", "risk_per_trade",
                    "volatility_target"] = "weights"
    percent: float = Field(0.1, gt=0, le=10, description="percent_of_equity: weight per position")
    shares: float = Field(100, gt=0, description="fixed_shares: shares per position")
    risk_per_trade: float = Field(0.01, gt=0, lt=1, description="equity share lost at the stop")
    target_vol: float = Field(0.15, gt=0, lt=5, description="volatility_target: annual vol")
    vol_window: int = Field(60, ge=5, le=1000)
    max_position: float | None = Field(None, gt=0, le=10, description="per symbol, of equity")
    max_sector: float | None = Field(None, gt=0, le=10, description="per sector, of equity")
    sectors: dict[str, str] | Literal["auto"] = Field(
        default_factory=dict, description="symbol: sector; auto: each A-share's industry board "
        "from the bundled 2018 snapshot (`mltrader sectors list`), valid from 2018-07-01")
    max_net: float | None = Field(None, ge=0, le=10)
    max_gross: float | None = Field(None, gt=0, le=10)
    daily_loss_limit: float | None = Field(
        None, gt=0, lt=1, description="flatten and stop opening for the day at this loss")
    kill_switch_drawdown: float | None = Field(
        None, gt=0, lt=1, description="flatten and stop for good at this drawdown from peak")
    max_trades_per_day: int | None = Field(None, ge=1)
    max_orders_per_symbol_per_day: int | None = Field(None, ge=1)
    price_sanity: float | None = Field(
        None, gt=0, description="reject a fill this far from the last close, e.g. 0.2")

    @model_validator(mode="after")
    def _consistent(self) -> RiskConfig:
        if self.sizing == "risk_per_trade" and self.stop_loss is None:
            raise ValueError("risk.sizing is risk_per_trade but risk.stop_loss is not set; the "
                             "stop distance sizes the position, e.g. stop_loss: 0.03")
        if self.max_sector is not None and not self.sectors:
            raise ValueError("risk.max_sector is set but risk.sectors is empty; add the map "
                             "(or sectors: auto for A-shares), "
                             "e.g. sectors: {AAPL: tech, XOM: energy}")
        if self.sizing == "fixed_shares" and (self.max_sector or self.max_net):
            raise ValueError("risk.max_sector / max_net cap weights but sizing is fixed_shares; "
                             "use another sizing mode or drop those caps")
        return self


class CostsConfig(_Strict):
    """Trading costs; bps are basis points (0.01%) of traded value."""

    commission_bps: float = Field(1.0, ge=0, le=1000)
    commission_per_share: float = Field(0.0, ge=0, description="money per share traded")
    commission_min: float = Field(0.0, ge=0, description="minimum per-share commission")
    commission_fixed: float = Field(0.0, ge=0, description="money per order")
    slippage_bps: float = Field(5.0, ge=0, le=1000)
    slippage_range_frac: float = Field(0.0, ge=0, le=1,
                                       description="extra slippage: share of the bar's range")
    half_spread_bps: float = Field(0.0, ge=0, le=1000)
    borrow_bps_per_year: float = Field(0.0, ge=0, le=10000, description="fee on short value")


class ExecutionConfig(_Strict):
    """When and how a decision made on bar t's close is filled."""

    fill: Literal["auto", "next_open", "next_close"] = Field(
        "auto", description="auto = next_open for OHLC data, next_close for close-only data")
    rebalance_band: float = Field(
        0.01, ge=0, lt=1, description="skip re-weighting trades smaller than this weight")
    order_type: Literal["market", "limit", "stop", "stop_limit"] = "market"
    limit_offset_bps: float = Field(0.0, ge=0, le=5000)
    stop_offset_bps: float = Field(0.0, ge=0, le=5000)
    tif: Literal["day", "gtc"] = "day"
    whole_shares: bool = False
    max_volume_share: float | None = Field(None, gt=0, le=1)
    remainder: Literal["wait", "cancel"] = "cancel"
    max_gross_leverage: float = Field(1.0, gt=0, le=10)
    oversize: Literal["resize", "reject"] = "resize"
    size_at: Literal["fill", "decision"] = Field(
        "fill", description="turn target weights into shares at the fill price, or at the "
        "decision close as a live bot must (the paper broker then trades the same shares)")


NOTIFY_EVENTS = ("fill", "guard", "error", "daily_summary")


def _http_url(v: str, key: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"notify.{key} must start with http:// or https:// (got {v!r})")
    return v.rstrip("/") if key == "telegram.api_base" else v


class NotifyWebhookConfig(_Strict):
    """A JSON POST per notification; MLTRADER_WEBHOOK_TOKEN, when set, is sent as a bearer
    token."""

    url: str = Field(description="the endpoint, e.g. https://hooks.example.com/mltrader")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http_url(v, "webhook.url")


class NotifyTelegramConfig(_Strict):
    """A Telegram bot message; the bot token comes from MLTRADER_TELEGRAM_TOKEN."""

    chat_id: str = Field(description="the chat (or @channel) the bot writes to")
    api_base: str = Field("https://api.telegram.org", description="the Bot API's base URL")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        return _http_url(v, "telegram.api_base")


class NotifyEmailConfig(_Strict):
    """An e-mail over SMTP; MLTRADER_SMTP_USER / MLTRADER_SMTP_PASSWORD log in when set."""

    smtp_host: str
    smtp_port: int = Field(587, ge=1, le=65535)
    from_addr: str
    to_addrs: list[str] = Field(min_length=1)
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS")


class NotifyConfig(_Strict):
    """Notifications of the live runner: fills, guard trips, errors and a daily summary.

    Each configured sink (webhook, telegram, email) is fed from its own queue by its own
    thread: a slow or failing sink is timed out, retried and logged, and never holds up
    trading. Secrets come only from MLTRADER_ environment variables, never from this file.
    """

    webhook: NotifyWebhookConfig | None = Field(
        None, description="{url}: a JSON POST per message (bearer token from "
        "MLTRADER_WEBHOOK_TOKEN when set)")
    telegram: NotifyTelegramConfig | None = Field(
        None, description="{chat_id, api_base}: a bot message; the token from "
        "MLTRADER_TELEGRAM_TOKEN")
    email: NotifyEmailConfig | None = Field(
        None, description="{smtp_host, smtp_port: 587, from_addr, to_addrs, starttls: true}; "
        "login from MLTRADER_SMTP_USER / MLTRADER_SMTP_PASSWORD when set")
    events: list[Literal["fill", "guard", "error", "daily_summary"]] = Field(
        default_factory=lambda: list(NOTIFY_EVENTS), description="which events to send")
    min_interval_s: float = Field(
        5.0, ge=0, le=86_400, description="at most one message per sink this often; what "
        "comes in between is sent as one combined message")
    timeout_s: float = Field(10.0, gt=0, le=300, description="per attempt, per sink")
    retries: int = Field(3, ge=0, le=20, description="extra attempts after a failure")
    backoff_s: float = Field(1.0, ge=0, le=600, description="first retry delay; doubles")
    queue_size: int = Field(1000, ge=1, le=1_000_000, description="per sink; when full the "
                            "oldest message is dropped (and counted)")

    @property
    def sinks(self) -> list[str]:
        """The configured sinks' names."""
        return [n for n in ("webhook", "telegram", "email") if getattr(self, n) is not None]


class NewsConfig(_Strict):
    """The news the news_* features read: where it comes from and how it is scored.

    An item counts for the first bar whose close comes after its publication (features/
    news.py); a file's naive timestamps need `tz`.
    """

    source: Literal["file", "alpaca", "yahoo", "rss", "placebo"] = Field(
        "file", description="file (CSV / Parquet: timestamp, symbols, headline[, summary, "
        "source]; `mltrader news import FILE` checks one), alpaca (its news API; keys as "
        "for its bars), yahoo (latest items only), rss (`feeds`), placebo (real headlines "
        "at random times about random symbols: no information by construction, the "
        "negative control of a with / without comparison)")
    path: Path | None = Field(None, description="the news file (source: file)")
    tz: str | None = Field(None, description="time zone of the file's naive timestamps, e.g. "
                           "America/New_York (None: they must carry an offset)")
    feeds: list[str] = Field(default_factory=list, description="RSS / Atom URLs (source: rss)")
    scorer: str = Field("vader", description="vader, textblob, lm (Loughran-McDonald) or "
                        "tfidf_lr (trained on the bundled labelled tweets); `mltrader "
                        "sentiment eval` measures them")
    seed: int = Field(0, description="placebo: which random draw")
    per_day: float = Field(4.0, gt=0, le=1000, description="placebo: items a day")
    text: Literal["headline", "headline_summary"] = Field(
        "headline", description="what is scored: the headline, or headline and summary")

    @model_validator(mode="after")
    def _needs_where(self) -> NewsConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("news.source file needs news.path (the CSV / Parquet file)")
        if self.source == "rss" and not self.feeds:
            raise ValueError("news.source rss needs news.feeds (one or more feed URLs)")
        return self


class ExecutorConfig(_Strict):
    """Where independent units of research work run (compare's models, ...): in this
    process, on local worker processes, or as tasks on a Ray cluster. Results are the same
    whichever runs them."""

    kind: Literal["local", "ray"] = Field("local", description="local (this machine's "
                                          "processes) or ray (`pip install 'mltrader[ray]'`)")
    workers: int = Field(1, ge=1, le=1024, description="local: worker processes (1: run in "
                         "this process)")
    address: str | None = Field(None, description="ray: `auto` (a running cluster), "
                                "ray://host:10001, or None for a local Ray on this machine")
    num_cpus: int | None = Field(None, ge=1, description="ray: CPUs of a local Ray (None: "
                                 "all); each task takes one")

    @model_validator(mode="after")
    def _cpus_of_a_local_ray(self) -> ExecutorConfig:
        if self.address is not None and self.num_cpus is not None:
            raise ValueError(f"executor.num_cpus sizes a local Ray, but executor.address "
                             f"({self.address}) joins a running cluster, which has its own "
                             "CPUs; drop one of them")
        return self


class RunConfig(_Strict):
    """One run: data, features, model, walk-forward, strategy, costs, output."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="names the run folder runs/<timestamp>-<name>")
    seed: int = Field(42, description="same config and seed, identical metrics.json")
    initial_cash: float = Field(100_000.0, gt=0, description="starting cash of both books")
    data: DataConfig = DataConfig()
    features: list[str] = Field(default_factory=lambda: list(DEFAULT_FEATURES), min_length=1,
                                description="ret_N, sma_ratio_N, sma_N, vol_N, rsi_N, "
                                "open/high/low/close/volume, ...")
    model: ModelConfig = ModelConfig()
    target: TargetConfig = TargetConfig()
    compare: list[ModelConfig] = Field(
        default_factory=list, description="models `mltrader compare` trains on the same folds")
    walk_forward: WalkForwardConfig = WalkForwardConfig()
    strategy: StrategyConfig = StrategyConfig()
    costs: CostsConfig = CostsConfig()
    execution: ExecutionConfig = ExecutionConfig()
    risk: RiskConfig = RiskConfig()
    notify: NotifyConfig = NotifyConfig()
    news: NewsConfig | None = Field(None, description="news for the news_* sentiment "
                                    "features (see NewsConfig)")
    executor: ExecutorConfig = ExecutorConfig()
    output_dir: Path = Field(Path("runs"), description="where run folders go")
    market: Literal["us", "cn_a"] = Field(
        "us", description="the market's trading rules: us (none beyond the engine's), cn_a "
        "(China A-shares: 100-share lots, T+1, price limits, 5 CNY minimum commission, stamp "
        "duty on sells, transfer fee; reports in CNY)")
    benchmark_index: str | None = Field(
        None, description="an index to judge against besides buy-and-hold (cn_a: 000300.SH, "
        "the CSI 300, by default)")

    @model_validator(mode="after")
    def _market_data(self) -> RunConfig:
        cn_data = self.data.source == "akshare" or (
            self.data.source == "bundled" and self.data.dataset == "ashare_csi300")
        if cn_data and self.market != "cn_a":
            raise ValueError("the data are China A-shares; add `market: cn_a` so their trading "
                             "rules (lots, T+1, price limits, stamp duty) apply")
        if self.market == "cn_a" and self.data.source not in ("bundled", "akshare", "csv",
                                                             "parquet", "file"):
            raise ValueError(f"market cn_a needs A-share data; data.source {self.data.source!r}"
                             " cannot serve it: use akshare, bundled (dataset: ashare_csi300) "
                             "or a file")
        if (self.market == "cn_a" and self.data.source == "bundled"
                and self.data.dataset != "ashare_csi300"):
            raise ValueError(f"market cn_a with bundled dataset {self.data.dataset!r}: that is "
                             "not A-share data; use dataset: ashare_csi300")
        return self

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("features lists a name twice; list each feature once")
        return v


# What a value given on the command line should look like, by pydantic error type.
_EXPECTED = {
    "int_parsing": "a whole number, e.g. 2010", "int_type": "a whole number, e.g. 2010",
    "int_from_float": "a whole number, e.g. 2010",
    "float_parsing": "a number, e.g. 0.02", "float_type": "a number, e.g. 0.02",
    "bool_parsing": "true or false", "bool_type": "true or false",
    "date_parsing": "a date YYYY-MM-DD, e.g. 2015-01-01",
    "date_from_datetime_parsing": "a date YYYY-MM-DD, e.g. 2015-01-01",
    "date_type": "a date YYYY-MM-DD, e.g. 2015-01-01",
    "list_type": "a list, e.g. [AAPL, MSFT]", "dict_type": "a mapping, e.g. {a: 1}",
    "model_type": "a mapping of keys, e.g. {commission_bps: 1}",
    "string_type": "text", "string_pattern_mismatch": "letters, digits, '_', '-' or '.'",
}


def _origin(loc: str, msg: str, origins: dict[str, str]) -> str | None:
    """The command-line option that set the key an error is about, if one did."""
    if loc in origins:
        return origins[loc]
    for key, flag in origins.items():  # an error raised by the key's parent section
        if key.startswith(f"{loc}.") and key.rsplit(".", 1)[-1] in msg:
            return flag
        if loc.startswith(f"{key}."):
            return flag
    return None


def _format_error(err: ValidationError, source: str,
                  origins: dict[str, str] | None = None) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    flag = _origin(loc, e["msg"], origins or {})
    if flag is None and e["type"] == "extra_forbidden":  # an unknown section set by --set
        flag = next((f for k, f in (origins or {}).items() if k.startswith(f"{loc}.")), None)
    if flag is not None:
        return _format_cli_error(e, loc, flag)
    if e["type"] == "extra_forbidden":
        parent = e["loc"][:-1]
        model: type[BaseModel] = RunConfig
        for p in parent:
            ann = model.model_fields[str(p)].annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else model
        allowed = ", ".join(model.model_fields)
        return (f"{source}: unknown key {loc!r}; check the spelling (allowed here: {allowed})")
    msg = e["msg"].removeprefix("Value error, ")
    if msg.startswith(f"{loc}.") or msg.startswith(f"{loc} "):
        return f"{source}: {msg}"  # the message already names the key
    got = e.get("input")
    got_s = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    return f"{source}: {loc}: {msg}{got_s}"


def _format_cli_error(e: Any, loc: str, flag: str) -> str:
    """An error in a value given on the command line: names the option and the format."""
    if e["type"] == "extra_forbidden":
        return f"{flag} (command line): unknown key {loc!r}; check the spelling " \
               "(the config's keys are listed in configs/default.yaml and `mltrader init`'s README)"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    got_s = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
    expected = _EXPECTED.get(e["type"])
    tail = f"; expected {expected}" if expected else ""
    where = "" if msg.startswith(f"{loc}") else f"{loc}: "
    return f"{flag} (command line): {where}{msg}{got_s}{tail}"


def config_from_dict(raw: dict[str, Any], source: str = "config",
                     origins: dict[str, str] | None = None) -> RunConfig:
    """Validate a dict into a `RunConfig`; errors become one-line `ConfigError`s.
    ``origins`` maps dotted keys set on the command line to the option that set them, so
    an error in such a value names the option rather than the file."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, "
                          f"got {type(raw).__name__}; see configs/default.yaml")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, origins)) from None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def parse_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (None when it holds nothing but blanks / comments).
    An unreadable file or invalid YAML is a one-line `ConfigError` naming the spot."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text (UTF-8) file, byte {err.start} cannot be "
                          "read; save the config as UTF-8 YAML") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror or err}); check "
                          "the path and its permissions") from None
    try:
        return load_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = _one_line(err.problem or err.context or type(err).__name__)
        if err.context and err.problem and problem.startswith("but "):
            problem = f"{_one_line(err.context)} {problem}"  # "expected ... but found ..."
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None
    except yaml.YAMLError as err:  # e.g. a control character (yaml.reader.ReaderError)
        where, problem = "", _one_line(err)
        if isinstance(err, yaml.reader.ReaderError):
            line = text.count("\n", 0, err.position) + 1
            column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
            where = f" at line {line}, column {column}"
            code = err.character if isinstance(err.character, int) else None
            problem = (f"control character #x{code:04x} is not allowed" if code is not None
                       else _one_line(err.reason))
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}; fix the syntax") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None,
                origins: dict[str, str] | None = None) -> RunConfig:
    """Read a YAML config file; `overrides` are dotted keys (``data.start``) set on top,
    ``origins`` names the command-line option behind each (for error messages)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config {p} is a folder, not a file; pass a YAML file, "
                          f"e.g. -c {p / 'default.yaml'}")
    if not p.is_file():
        hint = ("pass an existing file, e.g. -c configs/default.yaml" if Path("configs").is_dir()
                else "there is no configs/ folder here: run `mltrader init` to write a starter "
                "project (configs for every shipped strategy, a README of the keys, an .env "
                "template), or pass -c FILE")
        raise ConfigError(f"config file {p} not found; {hint}")
    raw = parse_yaml(p)
    if raw is None:
        raise ConfigError(f"{p} is empty (no settings, only blanks or comments): write a "
                          "config, e.g. copy configs/default.yaml")
    if not isinstance(raw, dict):
        return config_from_dict(raw, str(p))  # the proper "expected a mapping" error
    for key, value in (overrides or {}).items():
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if node.get(part) is None:  # an empty section (all children commented out)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                section = ".".join(parts[: depth + 1])
                raise ConfigError(f"{p}: `{section}` must be a mapping of keys to set {key} "
                                  "from the command line")
        node[parts[-1]] = value
    return config_from_dict(raw, str(p), origins)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (written into every run folder)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
