"""kill -9 `catsdogs label` at every step of its run in turn (each change to the files, as
tests/test_properties.py counts them), rerun it, and check that it ends as the run never killed:
the same exit status, files, rows and side files. The property test kills at one step Hypothesis
picks; this tries them all, for three runs (a move into a CSV table; a copy into a Parquet table
with corrections; a table only, with corrections), about 220 kills: 20 to 40 minutes on two cores.

    PYTHONPATH=tests .venv/bin/python -m pytest -p conftest scripts/kill_at_every_step.py -p no:cacheprovider -s
"""

from __future__ import annotations

import pytest

from test_properties import Ran, Scenario, check_same_end, run, run_killed, run_whole_and_prepare, tree_of

PHOTOS = [([], b"a", "cat", 0), ([], b"b", "dog", 1), ([b"s"], b"c", "cat", 2), ([], b"d", "dog", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("mode, table, corrections", [
    ("move", b"labels.csv", None),
    ("copy", b"labels.parquet", ((b"a.jpg", "dog"),)),
    (None, b"labels.csv", ((b"b.JPG", "cat"),)),
])  # fmt: skip
def test_a_run_killed_at_every_step_ends_as_one_never_killed(tiny_model, tmp_path_factory, mode, table, corrections):
    scenario = Scenario(tree_of(PHOTOS, False), mode=mode, table=table, corrections=corrections)
    steps = run_whole_and_prepare(tiny_model, tmp_path_factory, scenario)[1].steps
    failed = []
    for at in range(1, len(steps) + 1):
        reference, whole, place, _, argv = run_whole_and_prepare(tiny_model, tmp_path_factory, scenario)
        killed = Ran(run_killed(argv, place.root, at), "", "", whole.steps[: at - 1])
        again = run(argv, place.root)
        try:
            check_same_end(reference, whole, place, [killed, again], mode is not None)
        except AssertionError as e:
            failed.append((at, whole.steps[at - 1], str(e)[:300]))
        print(at, whole.steps[at - 1], "killed" if killed.code == -9 else killed.code, "rerun:", again.code,
              "FAILED" if failed and failed[-1][0] == at else "ok", flush=True)  # fmt: skip
    assert not failed, failed
