"""This machine's CPU, read once from /proc/cpuinfo (Linux): whether int8 runs well on it
(`has_vnni`, which the int8 OpenVINO exports depend on), and the line every benchmark prints
first (figures do not carry across CPUs)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# oneDNN instruction sets (ONEDNN_MAX_CPU_ISA) without 8-bit dot products
ISAS_WITHOUT_VNNI = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE"})
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags (empty where there is no /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, flags
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot products (AVX-512 VNNI, AVX-VNNI or AMX), whose int8 arithmetic
    cannot saturate as older AVX2/AVX-512 can (Linux only); a oneDNN capped below them
    (ONEDNN_MAX_CPU_ISA=AVX2, honoured by OpenVINO and TensorFlow) runs int8 as without, and counts so."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""  # (its older name)
    if cap.strip().upper() in ISAS_WITHOUT_VNNI:
        return False
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpuinfo()[1])


def cpu_description() -> str:
    """'CPU: <model>, <n> cores, vector extensions: avx2 fma ...' (Linux; best effort elsewhere)."""
    model, flags = _cpuinfo()
    vectors = " ".join(f for f in VECTOR_FLAGS if f in flags) or "unknown"
    text = f"CPU: {model}, {os.cpu_count()} cores, vector extensions: {vectors}"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    if cap:  # how an AVX-512 machine measures an AVX2 one: TensorFlow's and OpenVINO's kernels capped
        text += f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA: TensorFlow and OpenVINO only, not ONNX Runtime)"
    return text
