"""KServe's Python ModelServer wrapping the same onnxruntime session in a ``kserve.Model``, for the serve
benchmark. Runs in its own venv (.venv-bench): the kserve package pins versions that conflict with ours.

    .venv-bench/bin/python bench/kserve_server.py --model mlp.onnx --name mlp --port 8081 \
        [--enable_latency_logging False --configure_logging False]

KServe reads its own flags (``--enable_latency_logging``, ``--configure_logging``) from the command line
when it is imported; the two above are "logging off". Text models (``--tokenizer tokenizer.json``) take a
BYTES input and are tokenized in ``predict``, as a KServe user would write it.
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class OnnxModel(Model):
    def __init__(self, name: str, path: str, tokenizer: str | None = None):
        super().__init__(name)
        self.path = path
        self.tokenizer_path = tokenizer
        self.ready = False

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        self.in_name = self.session.get_inputs()[0].name
        self.in_names = [i.name for i in self.session.get_inputs()]
        self.out_name = self.session.get_outputs()[0].name
        self.tokenizer = None
        if self.tokenizer_path:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(self.tokenizer_path)
            self.tokenizer.enable_padding()
            self.tokenizer.enable_truncation(max_length=256)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        if self.tokenizer is not None:
            texts = [t.decode() if isinstance(t, bytes) else str(t) for t in payload.inputs[0].as_numpy().ravel()]
            enc = self.tokenizer.encode_batch(texts)
            feeds = {
                "input_ids": np.asarray([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in enc], dtype=np.int64),
            }
            feeds = {k: v for k, v in feeds.items() if k in self.in_names}
        else:
            feeds = {self.in_name: payload.inputs[0].as_numpy().astype(np.float32, copy=False)}
        y = self.session.run([self.out_name], feeds)[0]
        output = InferOutput(name=self.out_name, shape=list(y.shape), datatype="FP32")
        output.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="mlp")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--grpc-port", type=int, default=8091)
    parser.add_argument("--tokenizer", help="tokenizer.json of a text model")
    args, _ = parser.parse_known_args()  # the rest are KServe's own flags
    model = OnnxModel(args.name, args.model, args.tokenizer)
    model.load()
    ModelServer(http_port=args.port, grpc_port=args.grpc_port).start([model])


if __name__ == "__main__":
    main()
