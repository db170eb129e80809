"""The trials registry: every configuration a user tried on the same data, kept beside the runs.

A deflated Sharpe ratio (`mltrader.backtest.deflated`) asks how likely the best of N tries
would look this good by luck, so N must count every try made on the same data: sensitivity
grid cells, the models of a `compare`, tuning trials, RL seeds and separate backtests. Each
run records its trials here and deflates its Sharpe by all the trials recorded on its data.

Storage: ``runs/trials.jsonl`` (one JSON object a line) relative to the current directory, or
``<output_dir>/trials.jsonl`` via `registry_for`. Writes append one complete line (or a
batch of lines) in a single ``write`` under an advisory lock and are fsynced; a crash mid-write
leaves at most a torn last line, which readers skip with a warning (`TrialRegistry.warnings`
and the ``mltrader.trials`` logger) and the next write cuts off. Rewrites (`reset`) go
through a temporary file and ``os.replace``, so the file is always either the old or the new.

Dedup rule: a trial is identified by (dataset, config, kind, label). Re-recording the same
identity (an identical re-run: same data, same config hash, same kind and label) does NOT
add a trial: the newest record replaces the older one (its Sharpe, n_obs and time win). A
different seed is a different config, hence a new trial, as it should be.

Sharpe ratios are per bar (mean / std with ddof=1 of the per-bar returns), the convention of
`deflated_sharpe_ratio`. A trial with ``sharpe=None`` is count-only (e.g. an optuna trial
scored by IC): it raises N but does not enter the variance of the trials' Sharpes. Placebo
runs are not trials of the user's strategy search and are never recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mltrader.errors import MltraderError

if TYPE_CHECKING:
    from mltrader.data.bars import Bars

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.jsonl"
DEFAULT_PATH = Path("runs") / TRIALS_FILE
KINDS = ("backtest", "sensitivity", "compare", "tuning", "rl_seed")
# top-level RunConfig keys that name or place a run but do not change what it trades
RUN_ONLY_KEYS = ("name", "output_dir", "executor")
FORMAT_VERSION = 1


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- identities
def data_fingerprint(bars: Bars, start: int = 0) -> str:
    """16 hex characters (sha256) of the bars from row ``start`` on: the index (int64 ns UTC),
    the symbols and the closes (NaN-safe: NaNs hash as a mask, whatever their bit pattern).

    The same data gives the same fingerprint in any process; other symbols, dates or prices
    give another one.
    """
    n = len(bars.index)
    if not 0 <= start < n:
        raise ValueError(f"data_fingerprint: start {start} is outside the {n} bars")
    idx = bars.index[start:]
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    stamps = np.ascontiguousarray(idx.as_unit("ns").asi8, dtype="<i8")
    close = np.asarray(bars.close, dtype=np.float64)[start:]
    nan = np.isnan(close)
    values = np.ascontiguousarray(np.where(nan, 0.0, close) + 0.0, dtype="<f8")  # -0.0 -> 0.0
    h = hashlib.sha256(b"mltrader-bars-v1\0")
    h.update(json.dumps(list(bars.symbols)).encode("utf-8") + b"\0")
    h.update(np.asarray(close.shape, dtype="<i8").tobytes())
    h.update(stamps.tobytes())
    h.update(np.packbits(nan, axis=None).tobytes())
    h.update(values.tobytes())
    return h.hexdigest()[:16]


def config_hash(cfg_dict: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """16 hex characters (sha256) of a JSON-able dict, keys sorted (values that JSON cannot
    hold, e.g. paths or dates, hash as their ``str``). ``ignore``: top-level keys left out,
    e.g. `RUN_ONLY_KEYS` so that renaming a run or moving its folder is not a new trial."""
    skip = set(ignore)
    kept = {str(k): v for k, v in cfg_dict.items() if k not in skip}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def per_bar_sharpe(returns: Any) -> float | None:
    """mean / std (ddof=1) of per-bar returns, NaNs dropped, as `deflated_sharpe_ratio`
    computes it; None when undefined (fewer than 2 returns, zero or non-finite spread)."""
    r = np.asarray(returns, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if r.size < 2 or not np.isfinite(r).all():
        return None
    std = float(r.std(ddof=1))
    if not std > 0 or np.ptp(r) == 0:
        return None
    return float(r.mean() / std)


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Trial:
    """One configuration tried on one dataset.

    ``dataset``: `data_fingerprint`; ``config``: `config_hash`; ``kind``: one of `KINDS`;
    ``label``: free text (a model name, a grid cell, "trial 7"); ``sharpe``: the per-bar
    Sharpe of the trial's returns, or None for a count-only trial (a non-finite value is
    stored as None); ``n_obs``: the returns behind it; ``time``: ISO 8601 UTC.
    """

    dataset: str
    config: str
    kind: str
    label: str = ""
    sharpe: float | None = None
    n_obs: int = 0
    time: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Trial.kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.dataset or not self.config:
            raise ValueError("Trial needs a dataset fingerprint and a config hash")
        if self.sharpe is not None:
            s = float(self.sharpe)
            object.__setattr__(self, "sharpe", s if math.isfinite(s) else None)
        if int(self.n_obs) < 0:
            raise ValueError(f"Trial.n_obs must be >= 0, got {self.n_obs}")
        object.__setattr__(self, "n_obs", int(self.n_obs))
        object.__setattr__(self, "label", str(self.label))

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The identity the dedup rule uses: (dataset, config, kind, label)."""
        return (self.dataset, self.config, self.kind, self.label)

    def to_json(self) -> str:
        return json.dumps({"v": FORMAT_VERSION, **asdict(self)}, separators=(",", ":"),
                          allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> Trial:
        d = json.loads(line)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        sharpe = d.get("sharpe")
        if sharpe is not None and not isinstance(sharpe, (int, float)):
            raise ValueError("sharpe is not a number")
        n_obs = d.get("n_obs", 0)
        if not isinstance(n_obs, int) or isinstance(n_obs, bool):
            raise ValueError("n_obs is not an integer")
        fields = ("dataset", "config", "kind", "label", "time")
        if not all(isinstance(d.get(k), str) for k in fields):
            raise ValueError("a text field is missing")
        return cls(d["dataset"], d["config"], d["kind"], d["label"], sharpe, n_obs, d["time"])


def trials_of_run(dataset: str, config: str, kind: str, label: str, sharpe: float | None,
                  n_obs: int, tuning_trials: int = 1) -> list[Trial]:
    """The trials one run adds: itself, plus ``tuning_trials - 1`` count-only "tuning" trials
    (the tuner's other configurations; the chosen one is the run itself), labelled
    "<label> tuning trial i" so that a re-run of the same config dedups them too."""
    now = _now()
    out = [Trial(dataset, config, kind, label, sharpe, n_obs, now)]
    out += [Trial(dataset, config, "tuning", f"{label} tuning trial {i}", None, 0, now)
            for i in range(1, max(int(tuning_trials), 1))]
    return out


@dataclass(frozen=True)
class TrialStats:
    """What one dataset's trials say: ``n_trials`` (count-only ones included),
    ``sharpe_variance`` (sample variance, ddof=1, of the recorded per-bar Sharpes; None with
    fewer than 2) and ``by_kind`` (kind -> count)."""

    dataset: str
    n_trials: int
    sharpe_variance: float | None
    by_kind: dict[str, int]


def deflation_inputs(stats: TrialStats, n_obs: int) -> tuple[int, float]:
    """(n_trials, sr_variance) for ``deflated_sharpe_ratio(returns, n_trials,
    sr_variance=...)``: n_trials = max(stats.n_trials, 1); sr_variance = the trials' Sharpe
    variance when at least 2 Sharpes were recorded, else 1 / n_obs (the sampling variance
    of a per-bar Sharpe over n_obs bars, the floor a lone run uses)."""
    if n_obs < 1:
        raise ValueError(f"deflation_inputs: n_obs must be at least 1, got {n_obs}")
    n = max(int(stats.n_trials), 1)
    var = stats.sharpe_variance
    return n, float(var) if var is not None else 1.0 / n_obs


# --------------------------------------------------------------------------- registry
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (flock; a no-op without fcntl), held by
    every writer so that appends and rewrites never interleave."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TrialRegistry:
    """The trials recorded beside the runs; see the module docstring for the format and the
    dedup rule. Reading never fails on a damaged line: it is skipped and named in
    `warnings` (the last read's) and in the log."""

    def __init__(self, path: Path | str = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []

    def __repr__(self) -> str:
        return f"TrialRegistry({str(self.path)!r})"

    # ------------------------------------------------------------------ writing
    def record(self, trial: Trial) -> None:
        """Append one trial (one line, flushed and fsynced)."""
        self.record_many([trial])

    def record_many(self, trials: Iterable[Trial]) -> None:
        """Append trials in one write (a grid's cells, a compare's models)."""
        payload = "".join(t.to_json() + "\n" for t in trials).encode("utf-8")
        if not payload:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    self._mend_tail(fd)
                    os.write(fd, payload)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise MltraderError(f"cannot record trials in {self.path}: {e.strerror or e}; "
                                "make its folder writable or choose another output_dir") from e

    def _mend_tail(self, fd: int) -> None:
        """Before appending: a last line without its newline (a write cut short) is cut off,
        or, when it still parses, closed with a newline, so no record is glued to it."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        os.lseek(fd, max(size - 65536, 0), os.SEEK_SET)
        tail = os.read(fd, 65536)
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        if cut < 0 and size > len(tail):  # a >64 KiB last line: not ours; keep it apart
            os.write(fd, b"\n")
            return
        fragment = tail[cut + 1:]
        try:
            Trial.from_json(fragment.decode("utf-8"))
        except (ValueError, TypeError, UnicodeDecodeError):
            os.ftruncate(fd, size - len(fragment))
            msg = (f"{self.path}: dropped a torn last line ({len(fragment)} bytes; an "
                   "earlier write was cut short)")
            self.warnings.append(msg)
            log.warning(msg)
        else:
            os.write(fd, b"\n")

    # ------------------------------------------------------------------ reading
    def _lines(self) -> list[bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise MltraderError(f"cannot read the trials registry {self.path}: "
                                f"{e.strerror or e}; check its permissions or pass another "
                                "file") from e
        return data.split(b"\n")

    def _read(self) -> list[Trial]:
        """Every readable record in file order (duplicates included); damaged lines skipped
        and named in `warnings`."""
        self.warnings = []
        lines = self._lines()
        out: list[Trial] = []
        bad: list[int] = []
        torn = False
        last = len(lines) - 1
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                out.append(Trial.from_json(raw.decode("utf-8")))
            except (ValueError, TypeError, UnicodeDecodeError):
                if number - 1 == last:  # no newline after it: a write cut short
                    torn = True
                else:
                    bad.append(number)
        if torn:
            self.warnings.append(f"{self.path}: skipped a torn last line (line {last + 1}; a "
                                 "write was cut short); the next record cuts it off")
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
            self.warnings.append(f"{self.path}: skipped {len(bad)} unreadable line(s) "
                                 f"(line {shown}); `mltrader trials --reset` rewrites the file")
        for w in self.warnings:
            log.warning(w)
        return out

    @staticmethod
    def _dedup(records: Iterable[Trial]) -> list[Trial]:
        """The dedup rule: the newest record of each (dataset, config, kind, label) wins and
        takes the place of its latest recording."""
        latest: dict[tuple[str, str, str, str], Trial] = {}
        for t in records:
            latest.pop(t.key, None)
            latest[t.key] = t
        return list(latest.values())

    def trials(self, dataset: str | None = None) -> list[Trial]:
        """The trials (after the dedup rule), all or one dataset's, oldest first."""
        found = self._dedup(self._read())
        return found if dataset is None else [t for t in found if t.dataset == dataset]

    def datasets(self) -> list[str]:
        """The datasets with trials, in the order first recorded."""
        return list(dict.fromkeys(t.dataset for t in self.trials()))

    @staticmethod
    def _stats(dataset: str, trials: list[Trial]) -> TrialStats:
        sharpes = [t.sharpe for t in trials if t.sharpe is not None]
        var = float(np.asarray(sharpes, dtype=np.float64).var(ddof=1)) if len(
            sharpes) >= 2 else None
        by_kind: dict[str, int] = {}
        for t in trials:
            by_kind[t.kind] = by_kind.get(t.kind, 0) + 1
        return TrialStats(dataset, len(trials), var, by_kind)

    def stats(self, dataset: str) -> TrialStats:
        """Count, Sharpe variance and kinds of the trials on ``dataset``."""
        return self._stats(dataset, self.trials(dataset))

    def summary(self) -> list[dict[str, Any]]:
        """One dict per dataset (first recorded first): dataset, trials, by_kind,
        sharpe_variance (per bar), sharpes (how many trials have one), first, last (ISO
        times) and sample_label (the latest trial's label)."""
        groups: dict[str, list[Trial]] = {}
        for t in self.trials():
            groups.setdefault(t.dataset, []).append(t)
        rows = []
        for ds, ts in groups.items():
            st = self._stats(ds, ts)
            times = sorted(t.time for t in ts)
            rows.append({"dataset": ds, "trials": st.n_trials, "by_kind": st.by_kind,
                         "sharpe_variance": st.sharpe_variance,
                         "sharpes": sum(t.sharpe is not None for t in ts),
                         "first": times[0], "last": times[-1],
                         "sample_label": ts[-1].label})
        return rows

    # ------------------------------------------------------------------ reset
    def reset(self, dataset: str | None = None) -> int:
        """Remove every trial, or ``dataset``'s; returns how many (after the dedup rule)
        were removed. The file is rewritten atomically (temporary file + os.replace) with
        the trials kept, so duplicates and damaged lines go too."""
        if not self.path.exists():
            return 0
        try:
            with _locked(self.path):
                found = self.trials()
                kept = [] if dataset is None else [t for t in found if t.dataset != dataset]
                self._rewrite(kept)
        except OSError as e:
            raise MltraderError(f"cannot rewrite the trials registry {self.path}: "
                                f"{e.strerror or e}; check the folder's permissions") from e
        return len(found) - len(kept)

    def _rewrite(self, trials: list[Trial]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with contextlib.suppress(OSError):  # keep the file's permissions (mkstemp: 0600)
                os.chmod(tmp, stat.S_IMODE(self.path.stat().st_mode))
            with os.fdopen(fd, "wb") as f:
                f.write("".join(t.to_json() + "\n" for t in trials).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def registry_for(output_dir: Path | str) -> TrialRegistry:
    """The registry beside a config's run folders: ``<output_dir>/trials.jsonl``."""
    return TrialRegistry(Path(output_dir) / TRIALS_FILE)
