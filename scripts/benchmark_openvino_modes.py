#!/usr/bin/env python
"""OpenVINO benchmark (not a test): the engine end to end with the runtime as it is (PERFORMANCE_HINT
LATENCY, one request with every thread) against THROUGHPUT with 1 or 2 streams, the batch split
across an AsyncInferQueue's requests so that they run at once. Alternating rounds in one process,
the best counts. It answers whether throughput mode should replace the runtime's setting.

    .venv/bin/python scripts/benchmark_openvino_modes.py models/<run>/export/openvino-int8 DATA/test
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from catsdogs_batch.cpu import cpu_description  # noqa: E402
from benchmarking import alternate, fmt  # noqa: E402


class ThroughputRuntime:
    """The export compiled for throughput: each batch split across the queue's requests."""

    name = "openvino"

    def __init__(self, model_xml: Path, streams: int):
        import openvino as ov

        compiled = ov.Core().compile_model(str(model_xml), "CPU", {
            "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": os.cpu_count() or 1, "INFERENCE_PRECISION_HINT": "f32",
        })  # fmt: skip
        self.requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.queue = ov.AsyncInferQueue(compiled, self.requests)
        self.results: dict[int, np.ndarray] = {}
        self.queue.set_callback(lambda request, k: self.results.__setitem__(k, request.get_output_tensor(0).data.reshape(-1).copy()))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        parts = [p for p in np.array_split(np.ascontiguousarray(pixels, dtype=np.uint8), self.requests) if len(p)]
        for k, part in enumerate(parts):
            self.queue.start_async({0: part}, k)
        self.queue.wait_all()
        return np.concatenate([self.results[k] for k in range(len(parts))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an OpenVINO export folder (catsdogs export --format openvino)")
    parser.add_argument("images", type=Path, help="a folder of JPEGs (the sample's test/)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from catsdogs_batch.inference.engine import predict_folder
    from catsdogs_batch.options import EngineOptions, PredictOptions
    from catsdogs_batch.inference.predictor import Predictor

    print(cpu_description())
    variants = {"latency (the runtime)": Predictor(args.export)}
    for streams in (1, 2):
        predictor = Predictor(args.export)
        predictor.runtimes = [ThroughputRuntime(args.export / "model.xml", streams)]
        variants[f"throughput, {streams} stream(s)"] = predictor
    size = variants["latency (the runtime)"].image_size
    pixels = np.random.default_rng(0).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    reference = variants["latency (the runtime)"].predict(pixels)
    for name, predictor in variants.items():
        assert np.abs(predictor.predict(pixels) - reference).max() < 1e-5, name
    def end_to_end(predictor: Predictor) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            options = PredictOptions(args.export, args.images, Path(tmp) / "t.csv", engine=EngineOptions(progress=False))
            start = time.perf_counter()
            return predict_folder(options, predictor).rows / (time.perf_counter() - start)

    results = alternate({name: partial(end_to_end, p) for name, p in variants.items()}, args.rounds)
    latency = max(results["latency (the runtime)"])
    for name, rates in results.items():
        print(f"{name}: {max(rates):.0f} img/s end to end ({max(rates) / latency:.3f}x; all: {fmt(rates)})")


if __name__ == "__main__":
    main()
