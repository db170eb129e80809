"""Direct reinforcement: a recurrent trading policy trained on its own Sharpe ratio.

Moody & Saffell, "Learning to trade via direct reinforcement" (IEEE TNN, 2001). One policy per
symbol, with weights shared across symbols::

    F[t] = tanh(w . x[t] + u * F[t-1] + b),      F in [-1, 1] (short .. long), F[-1] = 0

trained by gradient ascent on the Sharpe ratio of the returns it earns net of costs,
back-propagated through the whole recurrence (full batch, all N symbols as one (T, N)
recurrence).

Timing (our data layout, see `mltrader.features.labels`): row t holds the features known at
bar t's close (``x[t]``) and the label ``y[t]``, the return from the fill at t+1 to the fill at
t+2. The position decided at row t, ``F[t]``, is what the engine holds over exactly that
interval, so **the position decided at row t earns y[t]**. The net return credited to row t is

    R[t, n] = F[t, n] * y[t, n] - c * |F[t, n] - F[t-1, n]|,      c = cost_bps * 1e-4

(the paper's ``R_t = F_{t-1} r_t - c |F_t - F_{t-1}|`` with its index shifted by one: the
trade from F[t-1] to F[t] is paid at the fill at t+1, where F[t] starts earning y[t]). The
objective is the per-bar Sharpe ratio (mean / std, not annualised) of the equal-weighted
portfolio ``P[t] = mean over the N symbols of R[t, n]``, over the rows with at least one
finite label. Missing data: a cell whose features are not all finite (warm-up, not trading)
keeps its previous position (so it trades nothing); a cell whose label is NaN contributes 0.

Online mode (``online=True``, ``predict(X, y)``): the weights keep adapting out of sample by
the differential Sharpe ratio (exponential moving estimates A, B of P and P**2 with rate
``eta``; step ``online_lr`` along dD/dtheta, the sensitivities dF/dtheta carried forward as
in real-time recurrent learning). Before deciding row t the model learns from decision row
t-2 only: its label y[t-2] (fill t-1 -> fill t) is known by bar t's fill, which is at or
before bar t's close. So **the position at row t depends on X rows <= t and y rows <= t-2**,
never on later rows; in batch mode it depends on X rows <= t only.

Deterministic (seeded init, deterministic torch algorithms, torch threads set for the fit and
restored after; the caller's global torch RNG is left untouched) and saved without pickle:
safetensors weights + a JSON file of params and standardisation statistics.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

# Before torch loads its OpenMP runtime (see torch_models): idle threads sleep, not spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.base import BaseEstimator  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402

from mltrader.models.torch_io import WEIGHTS_FILE, load_torch, save_torch, torch_env  # noqa: E402

FORMAT = "mltrader-rl/1"
MIN_TRAIN = 10  # rows with a finite label; fewer is a caller error, not a model
ONLINE_CLIP = 1.0  # max norm of one online gradient (before the online_lr step)
_VAR_EPS = 1e-16  # floor on the variance of the portfolio returns (std floor 1e-8)


# --------------------------------------------------------------------------- helpers


def lagged_returns(close: np.ndarray, m: int) -> np.ndarray:
    """(T, N, m): the last `m` simple returns known at each bar's close.

    ``out[t, n, k] = close[t-k, n] / close[t-k-1, n] - 1`` for k = 0..m-1 (k = 0 is the return
    into bar t itself); NaN where that history does not exist. Causal: row t reads closes up
    to bar t only. These are the paper's "last m returns" inputs.
    """
    close = np.asarray(close, dtype=np.float64)
    if close.ndim != 2:
        raise ValueError(f"close must be 2-D (T, N); got shape {close.shape}")
    if int(m) < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    t_len, n_sym = close.shape
    ret = np.full((t_len, n_sym), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret[1:] = close[1:] / close[:-1] - 1.0
    out = np.full((t_len, n_sym, int(m)), np.nan)
    for k in range(int(m)):
        out[k:, :, k] = ret[: t_len - k]
    return out


def policy_returns(positions: np.ndarray, y: np.ndarray, cost_bps: float) -> np.ndarray:
    """(T,) net returns of the equal-weighted portfolio of the positions (the training target).

    ``P[t] = mean_n (F[t, n] * y[t, n] - c * |F[t, n] - F[t-1, n]|)``, F[-1] = 0, c =
    cost_bps * 1e-4; a cell with a NaN label contributes 0, a NaN position counts as held.
    """
    f = np.asarray(positions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if f.shape != y.shape or f.ndim != 2:
        raise ValueError(f"positions {f.shape} and y {y.shape} must be the same (T, N) shape")
    f = _ffill(f)
    prev = np.vstack([np.zeros((1, f.shape[1])), f[:-1]])
    ok = np.isfinite(y)
    r = np.where(ok, f * np.where(ok, y, 0.0) - cost_bps * 1e-4 * np.abs(f - prev), 0.0)
    return r.mean(axis=1)


def per_bar_sharpe(returns: np.ndarray) -> float:
    """Mean / std (population) of a return series, not annualised; 0 for a flat series."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    sd = float(r.std()) if len(r) else 0.0
    return float(r.mean() / sd) if sd > 1e-12 else 0.0


def _ffill(f: np.ndarray) -> np.ndarray:
    """Forward-fill NaN down each column, 0 before the first value."""
    out = f.copy()
    prev = np.zeros(f.shape[1])
    for t in range(len(out)):
        bad = ~np.isfinite(out[t])
        out[t, bad] = prev[bad]
        prev = out[t]
    return out


def _check_x(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"X must be 3-D (T, N, n_features); got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"X must be numeric; got dtype {x.dtype}")
    if 0 in x.shape:
        raise ValueError(f"X is empty: shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if np.isinf(x).any():
        raise ValueError("X contains inf; use NaN for unknown features (that cell holds)")
    return x


def _check_y(y: Any, shape: tuple[int, int]) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != shape:
        raise ValueError(f"y must be (T, N) = {shape}, one label per bar and symbol; "
                         f"got shape {y.shape}")
    if np.isinf(y).any():
        raise ValueError("y contains inf; use NaN for unknown labels")
    return y


# --------------------------------------------------------------------------- recurrence


def _recur(a: np.ndarray, u: float, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F[t] = tanh(a[t] + u F[t-1]) where active, else F[t-1]; returns (F, tanh values)."""
    t_len, n_sym = a.shape
    f = np.empty((t_len, n_sym))
    h = np.empty((t_len, n_sym))
    all_active = active.all(axis=1)
    prev = np.zeros(n_sym)
    tmp = np.empty(n_sym)
    for t in range(t_len):
        np.multiply(prev, u, out=tmp)
        tmp += a[t]
        np.tanh(tmp, out=h[t])
        if all_active[t]:
            f[t] = h[t]
        else:
            np.copyto(f[t], np.where(active[t], h[t], prev))
        prev = f[t]
    return f, h


class _Recurrence(torch.autograd.Function):
    """The policy recurrence with a hand-written backward pass (back-propagation through time).

    A Python loop of autograd ops over ~4000 bars costs ~0.4 s per epoch; the same loops in
    numpy on (N,) vectors, forward and backward, cost ~25 ms.
    """

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, u: torch.Tensor, active: torch.Tensor
                ) -> torch.Tensor:
        act = active.numpy()
        uf = float(u)
        f, h = _recur(a.detach().numpy(), uf, act)
        ctx.f, ctx.act, ctx.u = f, act, uf
        ctx.d = np.where(act, 1.0 - h * h, 0.0)  # dF[t]/da[t]
        return torch.from_numpy(f)

    @staticmethod
    def backward(ctx: Any, grad_f: torch.Tensor) -> tuple[Any, ...]:
        g = grad_f.numpy()
        d, f, u = ctx.d, ctx.f, ctx.u
        jac = d * u + (~ctx.act)  # dF[t]/dF[t-1]
        acc = np.empty_like(g)  # total dL/dF[t], through all later positions
        acc[-1] = g[-1]
        for t in range(len(g) - 2, -1, -1):
            np.multiply(jac[t + 1], acc[t + 1], out=acc[t])
            acc[t] += g[t]
        ga = acc * d
        prev = np.vstack([np.zeros((1, f.shape[1])), f[:-1]])
        gu = float((ga * prev).sum())
        return torch.from_numpy(ga), torch.tensor(gu, dtype=torch.float64), None


# --------------------------------------------------------------------------- estimator


class DirectReinforcement(BaseEstimator):
    """Moody & Saffell's recurrent direct-reinforcement trader (see the module docstring).

    ``fit(X, y)``: X (T, N, n_features) causal features, y (T, N) labels (y[t] = return earned
    by the position decided at row t); NaN allowed in both. ``predict(X, y=None)``: positions
    (T, N) in [-1, 1] from F[-1] = 0.

    Parameters: epochs (full-batch Adam steps), lr (Adam), cost_bps (one-way cost of trading
    one unit of position, in bps of value: c = cost_bps * 1e-4), weight_decay (L2 penalty on
    w, subtracted from the Sharpe), clip (standardised features are clipped to [-clip, clip];
    0 or None: no clipping), online (keep adapting in predict, needs y), eta (adaptation rate
    of the differential Sharpe ratio's moving averages), online_lr (the online step size, the
    paper's rho), seed, threads (torch threads during fit; keep 1: the (T, N) tensors are
    small, and 2 threads made a 20 x 3800 fit 5x slower on a shared 2-core box).

    Fitted: w_ (n_features,), u_, b_ (the policy), x_mean_ / x_std_ (standardisation from the
    training cells), history_ (in-sample per-bar Sharpe before each epoch's step),
    train_sharpe_ (after the last), ret_mean_ / ret_sq_mean_ (mean of P and P**2 in sample:
    the online mode's starting A and B).
    """

    def __init__(self, epochs: int = 200, lr: float = 0.05, cost_bps: float = 10.0,
                 weight_decay: float = 0.0, clip: float | None = 5.0, online: bool = False,
                 eta: float = 0.01, online_lr: float = 0.01, seed: int = 0,
                 threads: int | None = 1) -> None:
        self.epochs = epochs
        self.lr = lr
        self.cost_bps = cost_bps
        self.weight_decay = weight_decay
        self.clip = clip
        self.online = online
        self.eta = eta
        self.online_lr = online_lr
        self.seed = seed
        self.threads = threads

    # --- inputs -------------------------------------------------------------------------
    def _standardise(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(standardised X with 0 in inactive cells, active mask (T, N))."""
        active = np.isfinite(x).all(axis=2)
        xs = (x - self.x_mean_) / self.x_std_
        if self.clip:
            np.clip(xs, -self.clip, self.clip, out=xs)
        xs[~active] = 0.0
        return xs, active

    # --- fit ----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> DirectReinforcement:
        x = _check_x(X)
        t_len, n_sym, n_feat = x.shape
        y = _check_y(y, (t_len, n_sym))
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be >= 0; got {self.epochs}")
        if self.cost_bps < 0:
            raise ValueError(f"cost_bps must be >= 0; got {self.cost_bps}")
        ok_y = np.isfinite(y)
        rows = ok_y.any(axis=1)
        if rows.sum() < MIN_TRAIN:
            raise ValueError(f"only {int(rows.sum())} rows with a finite label (need "
                             f"{MIN_TRAIN}); pass more training data")
        cells = np.isfinite(x).all(axis=2)
        if not cells.any():
            raise ValueError("no cell of X has all its features finite; nothing to learn from")
        flat = x[cells]  # (n_cells, F): the training rows' complete cells
        self.n_features_in_ = n_feat
        self.x_mean_ = flat.mean(axis=0)
        std = flat.std(axis=0)
        self.x_std_ = np.where(std > 1e-12, std, 1.0)
        xs, active = self._standardise(x)

        xt = torch.from_numpy(xs)
        yt = torch.from_numpy(np.where(ok_y, y, 0.0))
        okt = torch.from_numpy(ok_y.astype(np.float64))
        rows_t = torch.from_numpy(rows)
        act_t = torch.from_numpy(active)
        cost = float(self.cost_bps) * 1e-4

        def objective(w: torch.Tensor, u: torch.Tensor, b: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
            f = _Recurrence.apply(xt @ w + b, u, act_t)
            prev = torch.cat([torch.zeros(1, n_sym, dtype=torch.float64), f[:-1]])
            r = (f * yt - cost * (f - prev).abs()) * okt
            p = r.mean(dim=1)[rows_t]
            sharpe = p.mean() / torch.sqrt(p.var(unbiased=False) + _VAR_EPS)
            return sharpe, p

        with torch_env(self.threads, deterministic=True), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            w = (torch.randn(n_feat, dtype=torch.float64) / math.sqrt(n_feat)).requires_grad_()
            u = torch.zeros((), dtype=torch.float64, requires_grad=True)
            b = torch.zeros((), dtype=torch.float64, requires_grad=True)
            opt = torch.optim.Adam([w, u, b], lr=float(self.lr))
            self.history_: list[float] = []
            for _ in range(int(self.epochs)):
                opt.zero_grad(set_to_none=True)
                sharpe, _ = objective(w, u, b)
                loss = -sharpe + float(self.weight_decay) * (w * w).sum()
                loss.backward()
                opt.step()
                self.history_.append(float(sharpe.detach()))
            with torch.no_grad():
                sharpe, p = objective(w, u, b)
        self.w_ = w.detach().numpy().copy()
        self.u_ = float(u.detach())
        self.b_ = float(b.detach())
        self.train_sharpe_ = float(sharpe)
        # starting values of the differential Sharpe ratio's moving averages (online mode)
        self.ret_mean_ = float(p.mean())
        self.ret_sq_mean_ = float((p * p).mean())
        return self

    # --- predict ------------------------------------------------------------------------
    def _inputs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "w_")
        x = _check_x(X)
        if x.shape[2] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[2]} features; the model was fit on "
                             f"{self.n_features_in_}")
        return self._standardise(x)

    def predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Positions (T, N) in [-1, 1]; row t uses X rows <= t (and y rows <= t-2 online).

        Batch mode ignores y. With ``online=True`` y (T, N) is required: the labels of the
        same rows, NaN where unknown; the fitted weights are not changed.
        """
        xs, active = self._inputs(X)
        if not self.online:
            a = xs @ self.w_ + self.b_
            return _recur(a, self.u_, active)[0]
        if y is None:
            raise ValueError("online=True adapts on realised returns: pass predict(X, y) with "
                             "the labels of the same rows (NaN where not known yet)")
        return self._predict_online(xs, active, _check_y(y, xs.shape[:2]))[0]

    def _predict_online(self, xs: np.ndarray, active: np.ndarray, y: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Recurrent positions while ascending the differential Sharpe ratio, one bar at a time.

        theta = [w, u, b]. Before row t: learn from decision row s = t-2 (its label y[s] is
        realised at bar t's fill, at or before bar t's close), then decide F[t]. S[t] = dF[t]
        / dtheta (N, P) is carried forward with the weights of the moment (RTRL). Returns
        (positions (T, N), sensitivities (T, N, P)).
        """
        t_len, n_sym, n_feat = xs.shape
        n_par = n_feat + 2
        theta = np.concatenate([self.w_, [self.u_, self.b_]])
        cost = float(self.cost_bps) * 1e-4
        eta, step = float(self.eta), float(self.online_lr)
        mean, sq = self.ret_mean_, self.ret_sq_mean_
        f = np.zeros((t_len, n_sym))
        sens = np.zeros((t_len, n_sym, n_par))
        zero_f, zero_s = np.zeros(n_sym), np.zeros((n_sym, n_par))
        dz = np.ones((n_sym, n_par))  # dz/dtheta = [x[t], F[t-1], 1]
        for t in range(t_len):
            s = t - 2
            if s >= 0:
                ok = np.isfinite(y[s])
                if ok.any():
                    r = np.where(ok, y[s], 0.0)
                    f_prev = f[s - 1] if s >= 1 else zero_f
                    s_prev = sens[s - 1] if s >= 1 else zero_s
                    trade = f[s] - f_prev
                    sign = np.sign(trade)
                    p = float(np.where(ok, f[s] * r - cost * np.abs(trade), 0.0).mean())
                    d_now = np.where(ok, r - cost * sign, 0.0) / n_sym  # dP/dF[s]
                    d_before = np.where(ok, cost * sign, 0.0) / n_sym  # dP/dF[s-1]
                    grad_p = d_now @ sens[s] + d_before @ s_prev  # dP/dtheta
                    var = sq - mean * mean
                    if var > _VAR_EPS:
                        g = (sq - mean * p) / var**1.5 * grad_p  # dD/dtheta
                        norm = float(np.sqrt(g @ g))
                        if norm > ONLINE_CLIP:
                            g *= ONLINE_CLIP / norm
                        theta += step * g
                    mean += eta * (p - mean)
                    sq += eta * (p * p - sq)
            w, u, b = theta[:n_feat], theta[n_feat], theta[n_feat + 1]
            prev = f[t - 1] if t else zero_f
            s_prev = sens[t - 1] if t else zero_s
            h = np.tanh(xs[t] @ w + u * prev + b)
            dz[:, :n_feat] = xs[t]
            dz[:, n_feat] = prev
            new_s = (1.0 - h * h)[:, None] * (dz + u * s_prev)
            act = active[t]
            f[t] = np.where(act, h, prev)
            sens[t] = np.where(act[:, None], new_s, s_prev)
        return f, sens

    def score(self, X: Any, y: Any) -> float:
        """Per-bar Sharpe ratio of the predicted positions' portfolio, net of cost_bps."""
        y = np.asarray(y, dtype=np.float64)
        return per_bar_sharpe(policy_returns(self.predict(X, y), y, float(self.cost_bps)))

    # --- persistence (no pickle) --------------------------------------------------------
    def save(self, path: Path) -> list[Path]:
        """Write <path>/weights.safetensors and <path>/params.json; return both paths."""
        check_is_fitted(self, "w_")
        state = {
            "w": torch.from_numpy(np.ascontiguousarray(self.w_, dtype=np.float64)),
            "u": torch.tensor([self.u_], dtype=torch.float64),
            "b": torch.tensor([self.b_], dtype=torch.float64),
        }
        fitted = {
            "n_features_in_": int(self.n_features_in_),
            "x_mean_": self.x_mean_.tolist(),
            "x_std_": self.x_std_.tolist(),
            "train_sharpe_": self.train_sharpe_,
            "ret_mean_": self.ret_mean_,
            "ret_sq_mean_": self.ret_sq_mean_,
            "history_": self.history_,
        }
        return save_torch(path, FORMAT, type(self).__name__, state, self.get_params(), fitted)

    @classmethod
    def load(cls, path: Path) -> DirectReinforcement:
        """Rebuild a model written by `save`; refuses another class, format or weight set."""
        path = Path(path)
        params, fitted, state = load_torch(path, FORMAT, cls.__name__)
        model = cls(**params)
        n_feat = int(fitted["n_features_in_"])
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != {"w": (n_feat,), "u": (1,), "b": (1,)} or any(
                v.dtype != torch.float64 for v in state.values()):
            raise ValueError(f"{path / WEIGHTS_FILE} does not fit {cls.__name__} with "
                             f"{n_feat} features: {shapes}")
        model.n_features_in_ = n_feat
        model.x_mean_ = np.asarray(fitted["x_mean_"], dtype=np.float64)
        model.x_std_ = np.asarray(fitted["x_std_"], dtype=np.float64)
        model.train_sharpe_ = float(fitted["train_sharpe_"])
        model.ret_mean_ = float(fitted["ret_mean_"])
        model.ret_sq_mean_ = float(fitted["ret_sq_mean_"])
        model.history_ = [float(v) for v in fitted["history_"]]
        model.w_ = state["w"].numpy().copy()
        model.u_ = float(state["u"][0])
        model.b_ = float(state["b"][0])
        return model
