"""What the benchmarks share: measures taken in turn, and all rounds' figures. (The CPU line every
benchmark prints first is catsdogs_batch.cpu.cpu_description.)"""

from __future__ import annotations

from collections.abc import Callable


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
