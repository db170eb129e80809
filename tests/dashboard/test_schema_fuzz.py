"""schemathesis over the dashboard's OpenAPI schema: no generated request (valid or not,
with the token) gets a 500 from a server over a real paper session's journal and a runs/
folder."""

from __future__ import annotations

import json
import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from mltrader.dashboard import Source, create_app
from mltrader.live.session import journal_url
from tests.dashboard.support import TOKEN, serve


@pytest.fixture(scope="module")
def server(session, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    folder = d / "sess"
    shutil.copytree(session[0], folder)  # controls write commands: not the shared journal
    runs = d / "runs"
    (runs / "one").mkdir(parents=True)
    (runs / "one" / "metrics.json").write_text(json.dumps({"total_return": 0.1,
                                                           "sharpe": 1.2}))
    app = create_app(Source(journal_url(folder), runs), token=TOKEN, host="127.0.0.1",
                     token_from_env=True)
    with serve(app) as url:
        yield app, url


OPERATIONS = ["GET /api/overview", "GET /api/positions", "GET /api/orders", "GET /api/fills",
              "GET /api/decisions", "GET /api/risk", "GET /api/audit", "GET /api/commands",
              "GET /api/health", "GET /api/backtests", "GET /api/backtests/{name}/equity",
              "GET /metrics", "POST /api/control/{kind}"]


def _operations(app):
    schema = schemathesis.openapi.from_dict(app.openapi())
    return {op.label: op for op in (r.ok() for r in schema.get_all_operations())}


def test_every_operation_is_fuzzed(server):
    """The list below is the schema's: a new endpoint must be added to the fuzzing."""
    assert sorted(_operations(server[0])) == sorted([*OPERATIONS, "GET /api/stream"])


# every value of these operations' parameters is valid: nothing for negative data to violate
NOTHING_TO_VIOLATE = {"GET /api/overview", "GET /api/positions", "GET /api/health",
                      "GET /api/backtests", "GET /api/backtests/{name}/equity", "GET /metrics"}
CASES = [(label, mode) for label in OPERATIONS for mode in GenerationMode
         if not (mode is GenerationMode.NEGATIVE and label in NOTHING_TO_VIOLATE)]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{lb}-{m.value}" for lb, m in CASES])
def test_no_request_gets_a_server_error(server, label, mode):
    """Schema-valid (positive) and schema-violating (negative) requests, each with the token
    and without it: 4xx where refused, never 5xx. (The event stream never ends; it has its
    own test in test_app.)"""
    app, url = server
    op = _operations(app)[label]
    statuses: set[int] = set()

    @given(op.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
            response = case.call(base_url=url, headers=headers, timeout=20)
            statuses.add(response.status_code)
            assert response.status_code < 500, (label, case.path_parameters, case.query,
                                                case.body, response.status_code,
                                                response.text[:500])

    check()
    if mode is GenerationMode.POSITIVE and "{name}" not in label:  # (a random run name: 404)
        assert statuses & {200, 202}, (label, statuses)  # requests got through, not only 4xx
    if label.startswith("POST"):  # reads from 127.0.0.1 need no token; controls do
        assert 401 in statuses, statuses
