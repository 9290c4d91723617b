"""Open Inference Protocol v2 (KServe v2 / Triton) over HTTP: parsing requests and encoding responses.

Pure functions, no I/O: a request body (JSON, or JSON followed by raw tensors as in Triton's binary tensor
data extension) becomes an :class:`InferRequest`; model outputs become a response body plus the value of
``Inference-Header-Content-Length`` when binary outputs were asked for. Every malformed request raises
:class:`ProtocolError` with an HTTP status, a CamelCase reason and a sentence the caller can act on.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

# OIP v2 datatype -> numpy dtype (BYTES is handled apart: lists of str).
NP_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
# Binary tensors travel little-endian whatever the host.
_WIRE_DTYPES = {name: dt.newbyteorder("<") for name, dt in NP_DTYPES.items()}
DATATYPES = frozenset(NP_DTYPES) | {"BYTES"}
BYTES = "BYTES"
# numpy kinds a JSON list may hold for each datatype kind: JSON has no float/int distinction a client can
# rely on for floats, but an integer tensor given 1.5 is a mistake.
_ACCEPTED_KINDS = {"b": "b", "u": "biu", "i": "biu", "f": "biuf"}
HEADER_LENGTH = "Inference-Header-Content-Length"
_MAX_DIMS = 16


class ProtocolError(Exception):
    """A request the server refuses: HTTP status, CamelCase reason and an actionable sentence."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message

    def body(self) -> bytes:
        return orjson.dumps({"error": self.message, "reason": self.reason})


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    # numpy array of `shape`, or for BYTES a flat list of str (row-major).
    data: Any


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None
    binary_data_output: bool = False
    parameters: dict = field(default_factory=dict)


def _bad(reason: str, message: str) -> ProtocolError:
    return ProtocolError(400, reason, message)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > _MAX_DIMS:
        raise _bad("InvalidShape", f"{where}: 'shape' must be a list of at most {_MAX_DIMS} non-negative integers.")
    for dim in value:
        if type(dim) is not int or dim < 0:
            raise _bad("InvalidShape", f"{where}: 'shape' must be a list of non-negative integers, got {value!r}.")
    return tuple(value)


def _flatten_strings(data: Any, where: str, out: list[str] | None = None, depth: int = 0) -> list[str]:
    if not isinstance(data, list) or depth > _MAX_DIMS:
        raise _bad("InvalidData", f"{where}: 'data' must be a list of strings for datatype BYTES.")
    out = [] if out is None else out
    for item in data:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            _flatten_strings(item, where, out, depth + 1)
        else:
            raise _bad("InvalidData", f"{where}: BYTES data must hold strings, got {type(item).__name__}.")
    return out


def _json_tensor(datatype: str, shape: tuple[int, ...], data: Any, where: str) -> Any:
    count = math.prod(shape)
    if datatype == BYTES:
        values = _flatten_strings(data, where)
        if len(values) != count:
            raise _bad(
                "ElementCountMismatch",
                f"{where}: shape {list(shape)} needs {count} elements but 'data' holds {len(values)}.",
            )
        return values
    if not isinstance(data, list):
        raise _bad("InvalidData", f"{where}: 'data' must be a JSON list of numbers.")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise _bad("InvalidData", f"{where}: 'data' must be a rectangular list of numbers.") from None
    want = NP_DTYPES[datatype]
    if array.dtype.kind not in _ACCEPTED_KINDS[want.kind] and not (array.size == 0 and array.dtype.kind == "f"):
        raise _bad(
            "DatatypeMismatch",
            f"{where}: 'data' holds values that are not {datatype} (numpy kind {array.dtype.kind!r}); "
            f"send numbers of that type.",
        )
    if array.size != count:
        raise _bad(
            "ElementCountMismatch",
            f"{where}: shape {list(shape)} needs {count} elements but 'data' holds {array.size}.",
        )
    if want.kind in "iu" and array.size and array.dtype.kind in "iu":
        info = np.iinfo(want)
        if array.min() < info.min or array.max() > info.max:
            raise _bad("InvalidData", f"{where}: values out of range for {datatype}.")
    with np.errstate(over="ignore"):
        return array.astype(want, copy=False).reshape(shape)


def decode_bytes_tensor(raw: memoryview | bytes, count: int, where: str) -> list[str]:
    """Triton's BYTES wire form: each element is a 4-byte little-endian length and then its bytes."""
    out: list[str] = []
    pos, end = 0, len(raw)
    view = memoryview(raw)
    for _ in range(count):
        if pos + 4 > end:
            raise _bad("ElementCountMismatch", f"{where}: binary BYTES data ends before element {len(out) + 1} of {count}.")
        (size,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + size > end:
            raise _bad("InvalidData", f"{where}: binary BYTES element {len(out) + 1} runs past the end of its data.")
        try:
            out.append(str(view[pos : pos + size], "utf-8"))
        except UnicodeDecodeError:
            raise _bad("InvalidData", f"{where}: BYTES element {len(out) + 1} is not UTF-8 text.") from None
        pos += size
    if pos != end:
        raise _bad("ElementCountMismatch", f"{where}: binary BYTES data holds more than the {count} elements of its shape.")
    return out


def encode_bytes_tensor(values: list[str] | np.ndarray) -> bytes:
    """Inverse of :func:`decode_bytes_tensor`."""
    parts = []
    for value in values:
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _binary_tensor(datatype: str, shape: tuple[int, ...], raw: memoryview, where: str) -> Any:
    count = math.prod(shape)
    if datatype == BYTES:
        return decode_bytes_tensor(raw, count, where)
    dtype = _WIRE_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise _bad(
            "ElementCountMismatch",
            f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes but "
            f"binary_data_size is {len(raw)}.",
        )
    # A copy: the slice of the body is read-only and unaligned, which onnxruntime would copy more slowly.
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _header_length(value: str | None, body_length: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise _bad("InvalidHeader", f"{HEADER_LENGTH} must be an integer, got {value!r}.") from None
    if length < 0 or length > body_length:
        raise _bad("InvalidHeader", f"{HEADER_LENGTH} is {length} but the body has {body_length} bytes.")
    return length


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an inference request body; ``header_length`` is the Inference-Header-Content-Length header."""
    length = _header_length(header_length, len(body))
    json_part = body if length is None else body[:length]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise _bad("MalformedJson", f"The request body is not valid JSON ({exc}); send an OIP v2 inference request.") from None
    if not isinstance(doc, dict):
        raise _bad("MalformedRequest", "The request body must be a JSON object with an 'inputs' list.")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("MalformedRequest", "'id' must be a string.")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad("MalformedRequest", "'parameters' must be a JSON object.")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise _bad("MalformedRequest", "'inputs' must be a non-empty list of tensors.")
    binary = memoryview(body)[length:] if length is not None else None
    offset = 0
    inputs: list[InputTensor] = []
    for index, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise _bad("MalformedRequest", f"inputs[{index}] must be a JSON object with name, shape, datatype and data.")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("MalformedRequest", f"inputs[{index}] needs a non-empty string 'name'.")
        where = f"input {name!r}"
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise _bad("InvalidDatatype", f"{where}: 'datatype' must be one of {', '.join(sorted(DATATYPES))}.")
        shape = _shape(item.get("shape"), where)
        tparams = item.get("parameters") or {}
        if not isinstance(tparams, dict):
            raise _bad("MalformedRequest", f"{where}: 'parameters' must be a JSON object.")
        size = tparams.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise _bad("InvalidData", f"{where}: binary_data_size must be a non-negative integer.")
            if binary is None:
                raise _bad("InvalidHeader", f"{where} has binary_data_size but the request has no {HEADER_LENGTH} header.")
            if offset + size > len(binary):
                raise _bad("InvalidData", f"{where}: binary_data_size {size} runs past the end of the request body.")
            data = _binary_tensor(datatype, shape, binary[offset : offset + size], where)
            offset += size
        else:
            if "data" not in item:
                raise _bad("MalformedRequest", f"{where} needs 'data' (or parameters.binary_data_size).")
            data = _json_tensor(datatype, shape, item["data"], where)
        inputs.append(InputTensor(name, datatype, shape, data))
    if binary is not None and offset != len(binary):
        raise _bad("InvalidData", f"The body carries {len(binary) - offset} bytes of binary data no input claims.")
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise _bad("MalformedRequest", "'outputs' must be a list of {name, parameters} objects.")
        outputs = []
        for index, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _bad("MalformedRequest", f"outputs[{index}] must be an object with a string 'name'.")
            oparams = item.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise _bad("MalformedRequest", f"outputs[{index}]: 'parameters' must be a JSON object.")
            outputs.append(RequestedOutput(item["name"], bool(oparams.get("binary_data", False))))
    return InferRequest(request_id, inputs, outputs, bool(params.get("binary_data_output", False)), params)


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype of a numpy array (object/str arrays are BYTES)."""
    kind = array.dtype.kind
    if kind in "OUS":
        return BYTES
    for name, dt in NP_DTYPES.items():
        if dt == array.dtype:
            return name
    raise ValueError(f"no OIP datatype for numpy dtype {array.dtype}")


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[str, str, np.ndarray | list]],
    binary: set[str] | frozenset[str] = frozenset(),
) -> tuple[bytes, int | None]:
    """Body and Inference-Header-Content-Length (None when every output is JSON).

    ``outputs`` holds (name, datatype, array) with arrays already sliced to this request's rows; names in
    ``binary`` are sent as raw bytes after the JSON header.
    """
    tensors = []
    blobs = []
    for name, datatype, array in outputs:
        shape = list(np.shape(array)) if datatype != BYTES else [len(array)]
        if name in binary:
            if datatype == BYTES:
                raw = encode_bytes_tensor(array)
            else:
                raw = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[datatype]).tobytes()
            blobs.append(raw)
            tensors.append(
                {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(raw)}}
            )
        else:
            if not isinstance(array, np.ndarray):
                data = array
            elif datatype == BYTES:
                data = array.ravel().tolist()
            elif array.dtype == np.float16:
                # orjson has no float16; the values are exact in float32.
                data = array.ravel().astype(np.float32)
            else:
                data = array.ravel()
            tensors.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
    doc = {"model_name": model_name, "model_version": model_version, "outputs": tensors}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
