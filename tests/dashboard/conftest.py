"""The paper session every dashboard test reads (written once per test run; tests that
write to a journal copy the folder first)."""

from __future__ import annotations

import pytest

from mltrader.config import config_from_dict
from mltrader.data.files import save_file
from mltrader.live.session import paper_session
from mltrader.pipeline import load_data
from mltrader.testing import synthetic_bars
from tests.dashboard.support import CONFIG


@pytest.fixture(scope="session")
def session(tmp_path_factory):
    d = tmp_path_factory.mktemp("dash")
    path = save_file(synthetic_bars(330, 3, seed=8, ohlc=True, start="2000-01-03"),
                     d / "bars.csv")
    cfg = config_from_dict({**CONFIG, "data": {"source": "file", "path": str(path)}})
    bars, _ = load_data(cfg)
    folder = d / "sess"
    res = paper_session(cfg, bars, folder)
    return folder, res
