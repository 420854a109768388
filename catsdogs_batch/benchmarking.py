"""What every benchmark prints first: the CPU it ran on, since figures do not carry across CPUs."""

from __future__ import annotations

import os
import platform
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
    return f"CPU: {model}, {os.cpu_count()} cores, vector extensions: {vectors}"
