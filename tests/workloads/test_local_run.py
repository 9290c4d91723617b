"""The whole job on one machine (`make demo`): the reconcile core drives real evaluate, adapt and serve
processes on the bike-share scenario until the adapted version serves live traffic."""

from __future__ import annotations

import json
import urllib.request

import pytest

from modelreuse.local.demo import demo_object, live_traffic
from modelreuse.local.runner import LocalRun


@pytest.fixture
def local_run(tmp_path):
    run = LocalRun.create(demo_object(threshold=0.87), workdir=tmp_path, say=lambda _: None)
    yield run
    run.close()


def test_inherited_model_below_threshold_is_adapted_and_served(local_run):
    assert local_run.until_settled() == "Serving"
    status = local_run.body["status"]
    first, *rest = status["history"]
    assert (first["origin"], first["decision"]) == ("source", "Rejected")
    promoted = [h for h in rest if h["decision"] == "Promoted"]
    assert promoted and promoted[-1]["origin"] == "adaptation"
    assert promoted[-1]["score"] >= 0.87 > first["score"]
    assert status["serving"]["version"] == promoted[-1]["version"]
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready["Ready"] == "True" and ready["ThresholdMet"] == "True"

    lines: list[str] = []
    live_traffic(local_run, rows=50, say=lines.append)
    feedback = json.loads(lines[1].split("-> ", 1)[1])
    assert feedback["rows"] == 50 and 0.0 <= feedback["live_accuracy"] <= 1.0
    with urllib.request.urlopen(local_run.server.url + "/v2/health/ready") as resp:
        assert resp.status == 200


def test_a_threshold_out_of_reach_ends_rejected(tmp_path):
    body = demo_object(threshold=0.99)
    body["spec"]["adaptation"].update(maxAttempts=1, epochs=2)
    run = LocalRun.create(body, workdir=tmp_path, say=lambda _: None)
    try:
        assert run.until_settled() == "Rejected"
        assert run.server is None
        decisions = [h["decision"] for h in run.body["status"]["history"]]
        assert decisions == ["Rejected", "Rejected"]
    finally:
        run.close()
