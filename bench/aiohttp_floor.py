"""The floor of a Python HTTP server for the serve benchmark: a bare aiohttp endpoint that parses an OIP v2
JSON request, calls the same onnxruntime session once per request and answers, with no batching, metrics,
validation or capture.

    python bench/aiohttp_floor.py --model mlp.onnx --port 8082 [--loop asyncio|uvloop] [--tokenizer tokenizer.json]

With ``--tokenizer`` the endpoint takes BYTES text and tokenizes it before the session runs.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import onnxruntime as ort
from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--tokenizer")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    in_names = [i.name for i in session.get_inputs()]
    out_name = session.get_outputs()[0].name
    tokenizer = None
    if args.tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(args.tokenizer)
        tokenizer.enable_padding()
        tokenizer.enable_truncation(max_length=256)

    def feeds_of(tensor: dict) -> dict:
        if tokenizer is None:
            return {in_name: np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])}
        enc = tokenizer.encode_batch(list(tensor["data"]))
        feeds = {
            "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
        }
        return {k: v for k, v in feeds.items() if k in in_names}

    async def infer(request: web.Request) -> web.Response:
        doc = await request.json()
        y = session.run([out_name], feeds_of(doc["inputs"][0]))[0]
        return web.json_response({
            "model_name": request.match_info["name"],
            "outputs": [{"name": out_name, "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}],
        })

    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
