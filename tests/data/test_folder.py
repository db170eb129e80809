"""A folder of one file per symbol loads as one `Bars`; errors name the file inside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mltrader.config import DataConfig
from mltrader.data.files import load_file, load_file_report
from mltrader.errors import DataError


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "prices"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        load_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_folder_union_of_dates_symbols_from_file_names(tmp_path: Path) -> None:
    d = folder(tmp_path, {"aapl.csv": "date,close\n2024-01-02,1\n2024-01-03,2\n",
                          "BTC-USD.csv": "Date;Close\n2024-01-03;5,5\n2024-01-04;6\n",
                          ".hidden.csv": "junk", "readme.txt": "notes"})
    pd.DataFrame({"close": [7.0]}, index=pd.DatetimeIndex(["2024-01-04"], name="date")
                 ).to_parquet(d / "msft.parquet")
    b, rep = load_file_report(f"{d}/")
    assert b.symbols == ("AAPL", "BTC-USD", "MSFT")
    np.testing.assert_array_equal(b.close, [[1, np.nan, np.nan], [2, 5.5, np.nan],
                                            [np.nan, 6, 7]])
    assert rep.layout == "folder" and rep.rows == 5 and rep.separator == "mixed"
    assert rep.notes[0] == (f"{d}: not loaded (not .csv, .csv.gz, .tsv, .tsv.gz, .parquet "
                            "files): 'readme.txt'")


def test_folder_fields_every_file_has(tmp_path: Path) -> None:
    d = folder(tmp_path, {"a.csv": "date,open,high,low,close,volume\n2024-01-02,1,2,1,2,5\n",
                          "b.csv": "date,open,high,low,close,volume\n2024-01-02,3,3,3,3,0\n"})
    assert not load_file(d).close_only
    (d / "c.csv").write_text("date,close\n2024-01-02,9\n")
    b, rep = load_file_report(d)
    assert b.close_only and b.volume is None
    assert f"{d}: open not used: 'c.csv' has no open column" in rep.notes


def test_folder_clean_applies_to_every_file(tmp_path: Path) -> None:
    d = folder(tmp_path, {"a.csv": "date,close\n2024-01-02,1\n2024-01-03,.\n2024-01-04,3\n"})
    assert "or set data.clean: drop (delete those rows) or ffill" in error(d)
    b, rep = load_file_report(d, clean="ffill")
    np.testing.assert_array_equal(b.close[:, 0], [1, 1, 3])
    assert rep.cells_filled == 1


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error(empty) == (f"{empty}: the folder holds no data file; put one file per symbol "
                            "in it, named after the symbol (aapl.csv, BTC-USD.parquet), with a "
                            "supported extension: .csv, .csv.gz, .tsv, .tsv.gz, .parquet")
    d = folder(tmp_path, {"a.xlsx": "", "b.txt": ""})
    assert "no data file (found 'a.xlsx', 'b.txt')" in error(d)
    (d / "a.csv").write_text("date,close\n2024-01-02,-1\n")
    assert error(d).startswith(f"{d / 'a.csv'}, row 2, column 'close': close is '-1'")
    (d / "a.csv").write_text("date,X,Y\n2024-01-02,1,2\n")
    assert error(d).startswith(f"{d / 'a.csv'}: holds 2 symbols ('X', 'Y')")
    (d / "a.csv").write_text("date,close\n2024-01-02,1\n")
    pd.DataFrame({"date": ["2024-01-02"], "close": [1.0]}).to_parquet(d / "A.parquet")
    assert "symbol A also comes from" in error(d)


def test_config_accepts_weekly_and_monthly_files(tmp_path: Path) -> None:
    cfg = DataConfig(source="file", path=tmp_path / "m.csv", interval="1mo")
    assert cfg.interval == "1mo"
    assert DataConfig(source="csv", path=tmp_path / "w.csv", interval="1wk").interval == "1wk"
    with pytest.raises(ValueError, match="bundled sets are daily"):
        DataConfig(source="bundled", interval="1wk")
