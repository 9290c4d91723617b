"""OIP v2 request parsing and response encoding, checked against tritonclient's own encoder and decoder."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as triton

from modelreuse.runtime.serve.protocol import (
    ProtocolError,
    decode_bytes_tensor,
    encode_bytes_tensor,
    encode_infer_response,
    parse_infer_request,
)


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def fp32(name="input", shape=(2, 3), data=None, datatype="FP32"):
    count = int(np.prod(shape))
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": data if data is not None else list(range(count))}


def test_json_tensors_become_arrays_of_the_declared_type_and_shape():
    req = parse_infer_request(body({"id": "r-1", "inputs": [fp32(), fp32("ids", (3,), [1, 2, 3], "INT64")]}))
    assert req.id == "r-1"
    x, ids = req.inputs
    assert x.data.dtype == np.float32 and x.data.shape == (2, 3)
    assert x.data[1, 2] == 5.0
    assert ids.data.dtype == np.int64 and ids.data.tolist() == [1, 2, 3]
    assert req.outputs is None and not req.binary_data_output


def test_nested_json_data_is_accepted_in_row_major_order():
    req = parse_infer_request(body({"inputs": [fp32(data=[[0, 1, 2], [3, 4, 5]])]}))
    assert req.inputs[0].data.ravel().tolist() == [0, 1, 2, 3, 4, 5]


def test_output_selection_and_binary_flags_are_read():
    req = parse_infer_request(body({
        "inputs": [fp32()],
        "outputs": [{"name": "label"}, {"name": "logits", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": True},
    }))
    assert [(o.name, o.binary) for o in req.outputs] == [("label", False), ("logits", True)]
    assert req.binary_data_output


def test_bytes_tensors_from_json_and_nested_lists():
    req = parse_infer_request(body({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES", "data": [["a b"], ["c"]]}]}))
    assert req.inputs[0].data == ["a b", "c"]


def test_tritonclient_binary_request_round_trips():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    texts = np.array([b"great flight", "unicode \u00e9".encode()], dtype=object)
    a = triton.InferInput("input", list(x.shape), "FP32")
    a.set_data_from_numpy(x, binary_data=True)
    b = triton.InferInput("text", [2], "BYTES")
    b.set_data_from_numpy(texts, binary_data=True)
    c = triton.InferInput("mask", [4], "BOOL")
    c.set_data_from_numpy(np.array([True, False, True, True]), binary_data=False)
    payload, json_size = triton.InferenceServerClient.generate_request_body([a, b, c], request_id="bin-1")
    req = parse_infer_request(payload, str(json_size))
    assert req.id == "bin-1"
    got = {t.name: t.data for t in req.inputs}
    np.testing.assert_array_equal(got["input"], x)
    assert got["text"] == ["great flight", "unicode \u00e9"]
    assert got["mask"].tolist() == [True, False, True, True]
    # tritonclient asks for binary outputs when it names none.
    assert req.binary_data_output


def test_binary_response_decodes_with_tritonclient():
    logits = np.array([[0.25, -1.5], [3.0, 0.5]], dtype=np.float32)
    payload, header = encode_infer_response(
        "mlp", "2", "id-9", [("logits", "FP32", logits), ("label", "BYTES", ["high", "low"])], binary={"logits", "label"}
    )
    assert header is not None and header < len(payload)
    result = triton.InferenceServerClient.parse_response_body(payload, header_length=header)
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    assert result.as_numpy("label").tolist() == [b"high", b"low"]
    assert result.get_response()["id"] == "id-9"


def test_json_response_holds_flat_data_and_float16_as_numbers():
    payload, header = encode_infer_response(
        "m", "1", None, [("p", "FP16", np.array([[0.5], [0.25]], dtype=np.float16)), ("label", "BYTES", ["a", "b"])]
    )
    assert header is None
    doc = json.loads(payload)
    assert "id" not in doc
    assert doc["outputs"][0] == {"name": "p", "datatype": "FP16", "shape": [2, 1], "data": [0.5, 0.25]}
    assert doc["outputs"][1]["data"] == ["a", "b"]
    result = triton.InferenceServerClient.parse_response_body(payload)
    assert result.as_numpy("p").shape == (2, 1)


def test_bytes_wire_format_round_trips():
    values = ["", "x", "longer text \u2603"]
    assert decode_bytes_tensor(encode_bytes_tensor(values), 3, "t") == values


def _binary(doc, blobs: list[bytes]) -> tuple[bytes, str]:
    head = body(doc)
    return head + b"".join(blobs), str(len(head))


BAD_REQUESTS = [
    ("not json", b"{nope", None, "MalformedJson"),
    ("array body", b"[1, 2]", None, "MalformedRequest"),
    ("no inputs", body({"inputs": []}), None, "MalformedRequest"),
    ("id not a string", body({"id": 5, "inputs": [fp32()]}), None, "MalformedRequest"),
    ("input not an object", body({"inputs": [3]}), None, "MalformedRequest"),
    ("no name", body({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}), None, "MalformedRequest"),
    ("unknown datatype", body({"inputs": [fp32(datatype="FLOAT")]}), None, "InvalidDatatype"),
    ("negative dim", body({"inputs": [fp32(shape=(-1, 3), data=[1, 2, 3])]}), None, "InvalidShape"),
    ("shape not a list", body({"inputs": [{"name": "x", "shape": 3, "datatype": "FP32", "data": [1, 2, 3]}]}), None, "InvalidShape"),
    ("float dim", body({"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]}), None, "InvalidShape"),
    ("too many elements", body({"inputs": [fp32(data=list(range(7)))]}), None, "ElementCountMismatch"),
    ("too few elements", body({"inputs": [fp32(data=[1, 2])]}), None, "ElementCountMismatch"),
    ("no data", body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), None, "MalformedRequest"),
    ("string in FP32", body({"inputs": [fp32(shape=(2,), data=[1, "a"])]}), None, "DatatypeMismatch"),
    ("null in FP32", body({"inputs": [fp32(shape=(2,), data=[1, None])]}), None, "DatatypeMismatch"),
    ("float in INT64", body({"inputs": [fp32(shape=(2,), data=[1, 2.5], datatype="INT64")]}), None, "DatatypeMismatch"),
    ("out of INT8 range", body({"inputs": [fp32(shape=(2,), data=[1, 300], datatype="INT8")]}), None, "InvalidData"),
    ("ragged rows", body({"inputs": [fp32(data=[[1, 2, 3], [4, 5]])]}), None, "InvalidData"),
    ("BYTES with numbers", body({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [1]}]}), None, "InvalidData"),
    ("header not a number", body({"inputs": [fp32()]}), "x", "InvalidHeader"),
    ("header past the body", body({"inputs": [fp32()]}), "100000", "InvalidHeader"),
    ("binary without header", body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}), None, "InvalidHeader"),
]


@pytest.mark.parametrize("case, payload, header, reason", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_raise_400_with_a_reason(case, payload, header, reason):
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(payload, header)
    assert info.value.status == 400
    assert info.value.reason == reason
    assert json.loads(info.value.body())["error"]


def test_binary_size_must_match_the_shape():
    payload, header = _binary(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
        [struct.pack("<f", 1.0)],
    )
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(payload, header)
    assert info.value.reason == "ElementCountMismatch"


def test_binary_data_past_the_end_or_left_over_is_refused():
    doc = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}
    payload, header = _binary(doc, [struct.pack("<f", 1.0)])
    with pytest.raises(ProtocolError, match="past the end"):
        parse_infer_request(payload, header)
    payload, header = _binary(doc, [struct.pack("<3f", 1.0, 2.0, 3.0)])
    with pytest.raises(ProtocolError, match="no input claims"):
        parse_infer_request(payload, header)


def test_binary_bytes_tensor_errors():
    doc = {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
    payload, header = _binary(doc, [struct.pack("<I", 2) + b"ok"])
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(payload, header)
    assert info.value.reason == "ElementCountMismatch"
    doc["inputs"][0]["shape"] = [1]
    payload, header = _binary(doc, [struct.pack("<I", 2) + b"\xff\xfe"])
    with pytest.raises(ProtocolError) as info:
        parse_infer_request(payload, header)
    assert "UTF-8" in info.value.message
