"""Generate the ModelReuse CustomResourceDefinition from the pydantic models.

Pydantic's JSON Schema is turned into a *structural* OpenAPI v3 schema as the API server wants it:
references inlined, ``Optional`` unions collapsed, ``exclusiveMinimum`` in its OpenAPI 3.0 form,
int-or-string quantities marked, defaults (also of ``default_factory`` fields) written out so that the
API server fills the same defaults pydantic does.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import yaml
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticOmit, core_schema, to_jsonable_python

from modelreuse.api.base import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from modelreuse.api.spec import ModelReuseSpec
from modelreuse.api.status import ModelReuseStatus

CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_PATH = "crds/modelreuse.io_modelreuses.yaml"

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
    {"name": "Score", "type": "number", "jsonPath": ".status.evaluation.score", "description": "Latest score."},
    {"name": "Threshold", "type": "number", "jsonPath": ".spec.evaluation.threshold", "description": "The gate."},
    {"name": "Version", "type": "integer", "jsonPath": ".status.serving.version", "description": "Served version."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Ready condition.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class _WithFactoryDefaults(GenerateJsonSchema):
    """Writes ``default_factory`` results as defaults, in wire form (camelCase, no nulls)."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> dict[str, Any]:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        json_schema = self.generate_inner(schema["schema"])
        try:
            json_schema["default"] = to_jsonable_python(factory(), by_alias=True, exclude_none=True)
        except PydanticOmit:  # pragma: no cover - defensive
            pass
        return json_schema


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite one JSON Schema node into the structural OpenAPI v3 subset, recursively."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    node.pop("title", None)

    ref = node.pop("$ref", None)
    if ref is None and len(node.get("allOf", [])) == 1:
        ref = node.pop("allOf")[0]["$ref"]
    if ref is not None:
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        target.pop("title", None)
        # The field's own description wins over the model's docstring.
        node = {**target, **node}

    if node.get("x-kubernetes-int-or-string"):
        node.pop("anyOf", None)
        node.pop("type", None)
    elif "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if node.get("default", "") is None:
            node.pop("default")
        if len(branches) != 1:
            raise ValueError(f"cannot express union {branches} as a structural schema")
        branch = _structural(branches[0], defs)
        node = {**branch, **{k: v for k, v in node.items() if k not in branch or k == "description"}}

    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")

    for key in ("properties",):
        if key in node:
            node[key] = {name: _structural(child, defs) for name, child in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _structural(node[key], defs)
    if "properties" in node:
        node.setdefault("type", "object")
    return node


def openapi_schema(model: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition as a dict."""
    spec_schema = openapi_schema(ModelReuseSpec)
    status_schema = openapi_schema(ModelReuseStatus)
    root = {
        "type": "object",
        "description": "ModelReuse inherits a trained model, evaluates it on a new domain's labelled data, "
        "gates it on a threshold, adapts it when it falls short, serves it and retrains it on live alerts.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: modelreuse.io/v1alpha1."},
            "kind": {"type": "string", "description": "Kind of this object: ModelReuse."},
            # The API server allows nothing but the type here; kubectl explain describes metadata itself.
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "modelreuse", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["modelreuse"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_yaml() -> str:
    """The CRD as the YAML checked in at crds/modelreuse.io_modelreuses.yaml."""
    header = "# Generated by `modelreuse crd` from operator/modelreuse/api. Do not edit; run `make crd`.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=110, allow_unicode=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")


def run(args: argparse.Namespace) -> int:
    text = render_yaml()
    if args.output == "-":
        print(text, end="")
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0
