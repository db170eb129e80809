"""PyTorch sequence models (LSTM, 1-D CNN classifier, CNN-LSTM) as scikit-learn estimators.

Input is a float array (n_samples, window, n_features) whose samples are in time order.
Training cannot peek: the early-stopping validation slice is the last `val_fraction` of the
samples, the `embargo` samples just before it are dropped, and the feature (and target)
scalers are fit on the remaining training rows only. Runs are reproducible on CPU: seeded
init, a numpy-seeded shuffle, deterministic algorithms, and the caller's global torch RNG is
left untouched. Models are saved without pickle: safetensors weights + a JSON file of params
and scaler statistics.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. With
# threads=2 on a 2-core box shared with another process, spinning made LSTM training ~20x
# slower (2.4 s vs 0.13 s per batch). Has no effect if torch was imported earlier; an
# explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.special import expit  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402
from torch import nn  # noqa: E402

from mltrader.models.torch_io import load_state, load_torch, save_torch, torch_env  # noqa: E402
from mltrader.models.torch_nets import CNNLSTMNet, CNNNet, LSTMNet  # noqa: E402

FORMAT = "mltrader-torch/1"
PREDICT_BATCH = 4096
GRAD_CLIP = 1.0
MIN_TRAIN = 10  # fewer training samples than this is a caller error, not a model


# glibc mallopt parameters; see mallopt(3)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT = 128 * 1024
_KEEP_BELOW = 256 * 1024 * 1024


def _libc() -> Any:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") else None
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


@contextmanager
def _heap_kept():
    """Keep freed training buffers in the heap instead of returning them to the OS.

    Each batch's activations (a few MB) are above glibc's mmap threshold, so every batch
    mmapped and unmapped them: 1.3 M page faults and half a core of system time per epoch.
    Serving them from the heap made an LSTM epoch ~25% faster (21 -> 15 s on 70 k windows,
    2 cores). The glibc defaults are restored after the block and the heap trimmed.
    """
    libc = _libc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)
    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def _check_x(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"X must be 3-D (n_samples, window, n_features); got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"X must be numeric; got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"X is empty: shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("X contains NaN or inf; drop or fill those windows before fitting")
    return x


def _check_y(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-D with {n} values (one per sample); got shape {y.shape}")
    if np.issubdtype(y.dtype, np.number) and not np.isfinite(y).all():
        raise ValueError("y contains NaN or inf; drop those samples before fitting")
    return y


class _TorchEstimator(BaseEstimator):
    """Shared training / inference / persistence; subclasses define the net and the loss."""

    _is_classifier = False

    # --- to override -------------------------------------------------------------------
    def _net_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _net_class(self) -> type[nn.Module]:
        raise NotImplementedError

    # --- scaling -----------------------------------------------------------------------
    def _scale_x(self, x: np.ndarray) -> torch.Tensor:
        """(x - mean) / std per feature, computed in float32 without a float64 temporary."""
        xs = np.subtract(x, self.x_mean_.astype(np.float32), dtype=np.float32)
        xs /= self.x_std_.astype(np.float32)
        return torch.from_numpy(xs)

    def _split(self, n: int) -> tuple[int, int]:
        """(n_train, n_val): train on [0, n_train), validate on [n - n_val, n)."""
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if self.embargo < 0:
            raise ValueError(f"embargo must be >= 0; got {self.embargo}")
        n_val = math.ceil(n * self.val_fraction) if self.val_fraction > 0 else 0
        n_train = n - n_val - (self.embargo if n_val else 0)
        if n_train < MIN_TRAIN:
            raise ValueError(
                f"too few samples ({n}): a validation slice of {n_val} plus an embargo of "
                f"{self.embargo} leaves {n_train} for training (need {MIN_TRAIN}); pass more data"
            )
        return n_train, n_val

    def _build_net(self) -> nn.Module:
        return self._net_class()(self.n_features_in_, **self._net_kwargs())

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Training-space targets (standardised returns, or 0/1 class indices)."""
        if self._is_classifier:
            return np.searchsorted(self.classes_, y).astype(np.float32)
        return ((y.astype(np.float64) - self.y_mean_) / self.y_std_).astype(np.float32)

    # --- fit ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> _TorchEstimator:
        x = _check_x(X)
        y = _check_y(y, len(x))
        n, window, n_features = x.shape
        n_train, n_val = self._split(n)
        self.n_features_in_ = n_features
        self.window_ = window
        flat = x[:n_train].reshape(-1, n_features)
        self.x_mean_ = flat.mean(axis=0, dtype=np.float64)
        std = flat.std(axis=0, dtype=np.float64)
        self.x_std_ = np.where(std > 1e-12, std, 1.0)
        if self._is_classifier:
            self.classes_ = np.unique(y)
            if len(self.classes_) != 2:
                raise ValueError(f"y must hold exactly 2 classes; got {self.classes_.tolist()}")
            loss_fn: nn.Module = nn.BCEWithLogitsLoss()
        else:
            y = y.astype(np.float64)
            self.y_mean_ = float(y[:n_train].mean())
            ys = float(y[:n_train].std())
            self.y_std_ = ys if ys > 1e-12 else 1.0
            loss_fn = nn.MSELoss()
        xt = self._scale_x(x)
        yt = torch.from_numpy(self._targets(y))
        x_tr, y_tr = xt[:n_train], yt[:n_train]
        x_va, y_va = xt[n - n_val:], yt[n - n_val:]

        rng = np.random.default_rng(self.seed)
        with (torch_env(self.threads, deterministic=True), torch.random.fork_rng(devices=[]),
              _heap_kept()):
            torch.manual_seed(self.seed)
            net = self._build_net()
            opt = torch.optim.Adam(net.parameters(), lr=self.lr)
            best_loss, best_state, best_epoch, bad = math.inf, None, 0, 0
            self.history_: list[dict[str, float]] = []
            for epoch in range(1, self.epochs + 1):
                net.train()
                perm = torch.from_numpy(rng.permutation(n_train))
                total = 0.0
                for start in range(0, n_train, self.batch_size):
                    idx = perm[start:start + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(x_tr[idx]), y_tr[idx])
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
                    opt.step()
                    total += loss.item() * len(idx)
                record = {"epoch": epoch, "train_loss": total / n_train}
                if n_val:
                    val = float(loss_fn(self._forward(net, x_va), y_va))
                    record["val_loss"] = val
                    if val < best_loss:
                        best_loss, best_epoch, bad = val, epoch, 0
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        bad += 1
                self.history_.append(record)
                if n_val and bad >= self.patience:
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
            self.best_epoch_ = best_epoch if n_val else len(self.history_)
        net.eval()
        self.net_ = net
        return self

    # --- inference ---------------------------------------------------------------------
    @staticmethod
    def _forward(net: nn.Module, xt: torch.Tensor) -> torch.Tensor:
        """Raw outputs for all rows, in eval mode, in large batches."""
        was_training = net.training
        net.eval()
        with torch.inference_mode():
            out = [net(xt[i:i + PREDICT_BATCH]) for i in range(0, len(xt), PREDICT_BATCH)]
        net.train(was_training)
        return torch.cat(out) if out else torch.empty(0)

    def _raw(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "net_")
        x = _check_x(X)
        if x.shape[1:] != (self.window_, self.n_features_in_):
            raise ValueError(f"X windows are {x.shape[1:]}; the model was fit on "
                             f"{(self.window_, self.n_features_in_)} (window, n_features)")
        with torch_env(self.threads):
            return self._forward(self.net_, self._scale_x(x)).numpy().astype(np.float64)

    # --- persistence (no pickle) -------------------------------------------------------
    def save(self, path: Path) -> list[Path]:
        """Write <path>/weights.safetensors and <path>/params.json; return both paths."""
        check_is_fitted(self, "net_")
        fitted: dict[str, Any] = {
            "n_features_in_": int(self.n_features_in_),
            "window_": int(self.window_),
            "x_mean_": self.x_mean_.tolist(),
            "x_std_": self.x_std_.tolist(),
            "best_epoch_": int(self.best_epoch_),
            "history_": self.history_,
        }
        if self._is_classifier:
            fitted["classes_"] = self.classes_.tolist()
        else:
            fitted["y_mean_"] = self.y_mean_
            fitted["y_std_"] = self.y_std_
        return save_torch(path, FORMAT, type(self).__name__, self.net_.state_dict(),
                          self.get_params(), fitted)

    @classmethod
    def load(cls, path: Path) -> _TorchEstimator:
        """Rebuild a model written by `save`; refuses another class, format or weight set."""
        params, fitted, state = load_torch(path, FORMAT, cls.__name__)
        model = cls(**params)
        model.n_features_in_ = fitted["n_features_in_"]
        model.window_ = fitted["window_"]
        model.x_mean_ = np.asarray(fitted["x_mean_"], dtype=np.float64)
        model.x_std_ = np.asarray(fitted["x_std_"], dtype=np.float64)
        model.best_epoch_ = fitted["best_epoch_"]
        model.history_ = fitted["history_"]
        if cls._is_classifier:
            model.classes_ = np.asarray(fitted["classes_"])
        else:
            model.y_mean_ = float(fitted["y_mean_"])
            model.y_std_ = float(fitted["y_std_"])
        net = model._build_net()
        load_state(net, state, path, cls.__name__)
        net.eval()
        model.net_ = net
        return model


_TRAIN_DOC = """epochs, batch_size, lr (Adam), patience (epochs without a better validation loss),
    val_fraction (last share of samples used for early stopping), embargo (samples dropped
    between training and validation), seed, threads (torch threads during fit/predict; None:
    the thread budget, `models.threads`. A fixed count by default because the count changes
    the results in the last bits, and the same config and seed must give the same metrics
    under any executor)."""


class LSTMRegressor(RegressorMixin, _TorchEstimator):
    __doc__ = f"""Stacked LSTM -> dense head, predicting a float target (e.g. next return).

    Training parameters: {_TRAIN_DOC}"""

    def __init__(self, hidden: int = 50, layers: int = 2, dropout: float = 0.2,
                 epochs: int = 20, batch_size: int = 256, lr: float = 1e-3, patience: int = 3,
                 val_fraction: float = 0.15, embargo: int = 2, seed: int = 42,
                 threads: int | None = 2) -> None:
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.embargo = embargo
        self.seed = seed
        self.threads = threads

    def _net_class(self) -> type[nn.Module]:
        return LSTMNet

    def _net_kwargs(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "layers": self.layers, "dropout": self.dropout}

    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X) * self.y_std_ + self.y_mean_


class CNNLSTMRegressor(RegressorMixin, _TorchEstimator):
    __doc__ = f"""Conv1d over time -> LSTM -> dense head, predicting a float target.

    Training parameters: {_TRAIN_DOC}"""

    def __init__(self, channels: int = 32, kernel_size: int = 3, hidden: int = 50,
                 layers: int = 1, dropout: float = 0.2, epochs: int = 20, batch_size: int = 256,
                 lr: float = 1e-3, patience: int = 3, val_fraction: float = 0.15,
                 embargo: int = 2, seed: int = 42, threads: int | None = 2) -> None:
        self.channels = channels
        self.kernel_size = kernel_size
        self.hidden = hidden
        self.layers = layers
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.embargo = embargo
        self.seed = seed
        self.threads = threads

    def _net_class(self) -> type[nn.Module]:
        return CNNLSTMNet

    def _net_kwargs(self) -> dict[str, Any]:
        return {"channels": self.channels, "kernel_size": self.kernel_size,
                "hidden": self.hidden, "layers": self.layers, "dropout": self.dropout}

    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X) * self.y_std_ + self.y_mean_


class CNNClassifier(ClassifierMixin, _TorchEstimator):
    __doc__ = f"""1-D CNN over time giving P(up next bar); y holds two classes (e.g. 0 / 1).

    Training parameters: {_TRAIN_DOC}"""

    _is_classifier = True

    def __init__(self, channels: int = 32, kernel_size: int = 5, dropout: float = 0.2,
                 epochs: int = 20, batch_size: int = 256, lr: float = 1e-3, patience: int = 3,
                 val_fraction: float = 0.15, embargo: int = 2, seed: int = 42,
                 threads: int | None = 2) -> None:
        self.channels = channels
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.val_fraction = val_fraction
        self.embargo = embargo
        self.seed = seed
        self.threads = threads

    def _net_class(self) -> type[nn.Module]:
        return CNNNet

    def _net_kwargs(self) -> dict[str, Any]:
        return {"channels": self.channels, "kernel_size": self.kernel_size,
                "dropout": self.dropout}

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2): columns are P(classes_[0]) and P(classes_[1]) (P(down), P(up) for 0/1)."""
        p1 = expit(self._raw(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]
