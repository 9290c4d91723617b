"""Fuzz ``modelreuse serve`` with schemathesis against the OpenAPI document the server itself serves:
no input the document allows (or breaks) may get a 5xx or a response the document does not describe."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from hypothesis import HealthCheck, given, settings
from serve_support import MLP_LABELS, ServerProcess, make_mlp

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    model = make_mlp(folder)
    process = ServerProcess(
        ["--model", str(model), "--name", "bikes", "--labels", *MLP_LABELS, "--max-body-bytes", "65536"],
        termination_log=folder / "termination-log",
    )
    process.wait_ready()
    yield process
    code, result = process.stop()
    assert code == 0 and result["ok"]


def test_server_keeps_its_own_contract(server):
    schema = schemathesis.openapi.from_url(server.url + "/v2/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    # Negative cases need something to break: a path parameter or a body (health and /v2 have neither).
    plan = [(op, GenerationMode.POSITIVE) for op in operations]
    plan += [(op, GenerationMode.NEGATIVE) for op in operations if "{" in op.path]
    for operation, mode in plan:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def check(case):
            # A schema cannot say "len(data) == prod(shape)" or "name is one of the model's inputs", so a
            # schema-valid request may rightly get 400: every other check applies.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
        assert server.proc.poll() is None, f"the server died on {operation.label} ({mode.value})"
