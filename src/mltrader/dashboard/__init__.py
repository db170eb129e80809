"""The trader's web dashboard: a running session's journal and the backtest run folders, live.

``create_app(source)`` (app.py) builds the FastAPI app: server-rendered pages (templates/),
the JSON API under /api, server-sent events at /api/stream, Prometheus /metrics and the
controls (``POST /api/control/{kind}``, written to the journal's command table). ``data``
reads a journal READ-ONLY and the runs/ folders; ``security`` holds the token, the host and
origin checks; ``metrics`` the Prometheus collector. The command line is cli_dashboard.py.
"""

from mltrader.dashboard.data import Source

__all__ = ["Source", "create_app"]


def __getattr__(name: str) -> object:  # FastAPI is imported only when the app is built
    if name == "create_app":
        from mltrader.dashboard.app import create_app

        return create_app
    raise AttributeError(name)
