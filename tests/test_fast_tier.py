"""The fast tier's budget (tests/conftest.py), run in a pytest of its own with budgets of 0.05 CPU
seconds a test and 0.15 a shared fixture: a dearer test not marked slow fails and says so, whether
it spends the time itself or in a subprocess, and so does the first to use a dearer fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = '''
import subprocess, sys, time

import pytest

def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

@pytest.fixture(scope="session")
def trained():
    spin(0.1)

@pytest.fixture(scope="module")
def dear():
    spin(0.25)

def test_cheap():
    pass

def test_dear():
    spin(0.1)

@pytest.mark.slow
def test_dear_and_marked():
    spin(0.1)

def test_dear_in_a_subprocess():
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.1\\nwhile time.process_time() < end: pass"], check=True)

def test_first_to_use_a_fixture_within_its_budget(trained):
    pass

def test_first_to_use_a_dear_fixture(dear):
    pass

def test_second_to_use_it(dear):
    pass

def test_dear_and_failing():
    spin(0.1)
    assert False, "its own failure"
'''


@pytest.mark.slow  # a pytest of its own: 2 CPU seconds
def test_a_test_not_marked_slow_that_costs_more_than_the_budget_fails(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini(
        "[pytest]\naddopts = --strict-markers\nmarkers =\n    slow: dear\n"
        "fast_test_cpu_seconds = 0.05\nfast_fixture_cpu_seconds = 0.15\n"
    )
    pytester.makepyfile(test_budget=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")

    summary = dict(line.split()[1::-1] for line in result.outlines if line.startswith(("PASSED ", "FAILED ")))
    assert summary == {
        "test_budget.py::test_cheap": "PASSED",
        "test_budget.py::test_dear": "FAILED",
        "test_budget.py::test_dear_and_marked": "PASSED",
        "test_budget.py::test_dear_in_a_subprocess": "FAILED",  # a subprocess's CPU counts
        "test_budget.py::test_first_to_use_a_fixture_within_its_budget": "PASSED",  # not charged to the test
        "test_budget.py::test_first_to_use_a_dear_fixture": "FAILED",
        "test_budget.py::test_second_to_use_it": "PASSED",  # made once, charged once
        "test_budget.py::test_dear_and_failing": "FAILED",
    }
    result.stdout.fnmatch_lines([
        "test_budget.py::test_dear cost 0.? CPU seconds (setup + call), over the fast tier's 0.05 s "
        "(fast_test_cpu_seconds): mark it slow or make it faster",
        "test_budget.py::test_first_to_use_a_dear_fixture is the first to use the fixture dear, which cost 0.? CPU "
        "seconds, over the fast tier's 0.15 s for one (fast_fixture_cpu_seconds): mark it slow or make it faster",
    ])  # fmt: skip
    result.stdout.fnmatch_lines(["E       AssertionError: its own failure"])  # its own failure, not the budget's
