"""cpu.py: whether this CPU runs OpenVINO's int8 with VNNI, as ONEDNN_MAX_CPU_ISA allows."""

from __future__ import annotations


def test_a_onednn_capped_below_vnni_counts_as_a_cpu_without_it(monkeypatch):
    """OpenVINO runs int8 with the instructions ONEDNN_MAX_CPU_ISA allows: capped at AVX2 on a
    VNNI machine, its int8 is an AVX2 machine's, and an export made there must suit one."""
    from catsdogs_batch import cpu

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    uncapped = cpu.has_vnni()
    for cap in ("AVX2", "avx512_core", "SSE41"):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu.has_vnni() is False, cap
    for cap in ("AVX512_CORE_VNNI", "AVX512_CORE_AMX", "ALL", ""):  # a cap that keeps them changes nothing
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
        assert cpu.has_vnni() is uncapped, cap
