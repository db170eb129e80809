"""The torch modules behind `torch_models`: each maps (batch, window, features) -> (batch,).

Every net returns one raw output per sample: the (standardised) prediction for regressors,
the logit of P(up) for the classifier. The whole window lies in the past of the prediction
time, so convolutions may look both ways inside it ("same" padding does not peek ahead).
"""

from __future__ import annotations

import torch
from torch import nn


class LSTMNet(nn.Module):
    """Stacked LSTM (e.g. 2 x 50 units, dropout 0.2 between layers) -> dropout -> dense head."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # (batch, window, hidden)
        return self.head(self.drop(out[:, -1, :])).squeeze(-1)


class CNNNet(nn.Module):
    """Two Conv1d+ReLU layers over time, pooled as [mean over the window, last bar] -> dense."""

    def __init__(self, n_features: int, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_features, channels, kernel_size, padding="same"),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size, padding="same"),
            nn.ReLU(),
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2))  # (batch, channels, window)
        pooled = torch.cat([h.mean(dim=2), h[:, :, -1]], dim=1)
        return self.head(self.drop(pooled)).squeeze(-1)


class CNNLSTMNet(nn.Module):
    """Conv1d+ReLU over time (local patterns) -> LSTM (sequence) -> dropout -> dense head."""

    def __init__(self, n_features: int, channels: int, kernel_size: int, hidden: int,
                 layers: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_features, channels, kernel_size, padding="same"),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(channels, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (batch, window, channels)
        out, _ = self.lstm(h)
        return self.head(self.drop(out[:, -1, :])).squeeze(-1)
