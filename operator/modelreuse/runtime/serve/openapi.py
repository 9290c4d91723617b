"""The server's own OpenAPI 3.0 document (GET /v2/openapi.json): the OIP v2 routes it serves, with the
served model's name, version and inputs filled in so that a fuzzer (schemathesis) reaches inference."""

from __future__ import annotations

from typing import Any

from modelreuse import __version__
from modelreuse.runtime.serve.protocol import DATATYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request or tensors that do not fit the model.",
        404: "Unknown model or version.",
        405: "Method not allowed on this path.",
        413: "Body over the size limit.",
        503: "The model is not ready.",
    }
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _example_request(server) -> dict[str, Any]:
    model = server.model
    if model is None:
        return {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}
    inputs = []
    for spec in model.inputs:
        shape = [1 if d == -1 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        value: Any = "an example text" if spec.datatype == "BYTES" else (False if spec.datatype == "BOOL" else 0)
        inputs.append({"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": [value] * count})
    return {"id": "example-1", "inputs": inputs}


def document(server) -> dict[str, Any]:
    """The OpenAPI document of a running server."""
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [server.name]}}
    version_param = {
        "name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": [server.version_str]},
    }
    infer = {
        "summary": "Run inference (JSON tensors; binary tensors via Inference-Header-Content-Length).",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InferenceRequest"},
                    "example": _example_request(server),
                }
            },
        },
        "responses": {
            "200": {
                "description": "Model outputs; binary outputs follow the JSON header when asked for.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            **_errors(400, 404, 413, 503),
        },
    }
    labels = list(server.model.labels) if server.model is not None else []
    feedback = {
        "summary": "Attach ground-truth labels to earlier inference requests by id.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/Feedback"},
                    "example": {"id": "example-1", "labels": labels[:1] or [0]},
                }
            },
        },
        "responses": {"200": _json("FeedbackResult", "Feedback scored."), **_errors(400, 404, 413, 503)},
    }
    metadata = {"responses": {"200": _json("ModelMetadata", "Model metadata."), **_errors(404, 503)}}
    model_ready = {"responses": {"200": _json("ModelReady", "Model ready."), **_errors(404, 503)}}
    paths: dict[str, Any] = {
        "/v2/health/live": {"get": {"responses": {"200": _json("Live", "The server is live.")}}},
        "/v2/health/ready": {
            "get": {"responses": {"200": _json("Ready", "The server is ready."), "503": _json("Ready", "Not ready.")}}
        },
        "/v2": {"get": {"responses": {"200": _json("ServerMetadata", "Server metadata.")}}},
        "/metrics": {
            "get": {
                "responses": {
                    "200": {"description": "Prometheus exposition text.", "content": {"text/plain": {"schema": {"type": "string"}}}}
                }
            }
        },
    }
    for prefix, params in (
        ("/v2/models/{name}", [name_param]),
        ("/v2/models/{name}/versions/{version}", [name_param, version_param]),
    ):
        paths[prefix] = {"parameters": params, "get": metadata}
        paths[prefix + "/ready"] = {"parameters": params, "get": model_ready}
        paths[prefix + "/infer"] = {"parameters": params, "post": infer}
        paths[prefix + "/feedback"] = {"parameters": params, "post": feedback}
    tensor_meta = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    schemas = {
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
        },
        "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}, "error": {"type": "string"}}},
        "ModelReady": {"type": "object", "required": ["name", "ready"], "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
        "ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "extensions": {"type": "array", "items": {"type": "string"}}},
        },
        "ModelMetadata": {
            "type": "object", "required": ["name", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": tensor_meta},
                "outputs": {"type": "array", "items": tensor_meta},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                            "datatype": {"type": "string", "enum": sorted(DATATYPES)},
                            "parameters": {"type": "object"},
                            "data": {"type": "array"},
                        },
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        **tensor_meta,
                        "properties": {**tensor_meta["properties"], "data": {"type": "array"}, "parameters": {"type": "object"}},
                    },
                },
            },
        },
        "Feedback": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "labels": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}},
                "label": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
                "feedback": {"type": "array", "items": {"type": "object"}},
            },
        },
        "FeedbackResult": {
            "type": "object", "required": ["rows", "correct", "unknown_ids"],
            "properties": {
                "rows": {"type": "integer"}, "correct": {"type": "integer"},
                "unknown_ids": {"type": "array", "items": {"type": "string"}},
                "live_accuracy": {"type": "number", "nullable": True}, "window": {"type": "integer"},
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelreuse serve (Open Inference Protocol v2)", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }
