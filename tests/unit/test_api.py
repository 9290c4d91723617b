"""The pydantic models: samples validate, the invalid catalogue is refused naming the field, and the
checked-in CRD is exactly what the models generate."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from catalogue import CATALOGUE, CRD_FILE, SAMPLES, Invalid, normalise, pydantic_path
from modelreuse.api import ModelReuse, ModelReuseSpec
from modelreuse.api.base import parse_duration
from modelreuse.api.crd import build_crd, render_yaml
from modelreuse.api.spec import AdaptationSpec, DeploymentSpec


def _schema() -> dict:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_checked_in_crd_matches_the_models():
    assert CRD_FILE.read_text() == render_yaml(), "crds/ is stale: run `make crd`"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_are_valid(sample):
    obj = ModelReuse.from_dict(yaml.safe_load(sample.read_text()))
    assert obj.spec.evaluation.threshold > 0


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_invalid_objects_are_refused_naming_the_field(case: Invalid):
    spec = case.build()["spec"]
    with pytest.raises(ValidationError) as info:
        ModelReuseSpec.model_validate(spec)
    paths = [normalise(pydantic_path(e["loc"])) for e in info.value.errors()]
    want = normalise(case.field)
    assert any(want == p or want.startswith(p + ".") for p in paths if p != "spec"), paths


def test_every_field_has_a_description():
    missing = [path for path, node in _walk(_schema()) if path not in ("", ".metadata") and "description" not in node
               and not path.endswith("[]") and not path.endswith("{}")]
    assert missing == []


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        for banned in ("anyOf", "allOf", "oneOf", "$ref", "title"):
            assert banned not in node, f"{path} has {banned}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_crd_defaults_equal_pydantic_defaults():
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["adaptation"]["default"] == AdaptationSpec().to_json_dict()
    assert spec["deployment"]["default"] == DeploymentSpec().to_json_dict()


def test_bounds_and_enums_reach_the_crd():
    spec = _schema()["properties"]["spec"]["properties"]
    threshold = spec["evaluation"]["properties"]["threshold"]
    assert (threshold["minimum"], threshold["maximum"]) == (0.0, 1.0)
    assert spec["source"]["properties"]["format"]["enum"] == ["onnx", "torchscript", "torch-export"]
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("250ms", 0.25)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_refuses_words():
    with pytest.raises(ValueError):
        parse_duration("soon")
