"""What every benchmark prints first: the CPU it ran on, since figures do not carry across CPUs."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> str:
    """'CPU: <model>, <n> cores, vector extensions: avx2 fma ...' (Linux; best effort elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    vectors = " ".join(f for f in VECTOR_FLAGS if f in flags) or "unknown"
    text = f"CPU: {model}, {os.cpu_count()} cores, vector extensions: {vectors}"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap:  # how an AVX-512 machine measures an AVX2 one: TensorFlow's and OpenVINO's kernels capped
        text += f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA: TensorFlow and OpenVINO only, not ONNX Runtime)"
    return text


def alternate(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each measure once per round, in turn, so that drift of a shared machine hits all alike;
    every result by name (a benchmark reports the best)."""
    results: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            results[name].append(measure())
    return results


def fmt(values: list[float]) -> str:
    """All rounds' figures, for the record beside the best."""
    return ", ".join(f"{v:.1f}" for v in values)
