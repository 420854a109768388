"""check_options: every command's options, however they were made, are refused in one line
before any work when a value is not one the option admits."""

from pathlib import Path

import numpy as np
import pytest

from catsdogs_batch.errors import UserError
from catsdogs_batch.options import EngineOptions, Labelling, PredictOptions, ReviewOptions, check_options


def predict_options(**given) -> PredictOptions:
    return PredictOptions(Path("model"), Path("photos"), Path("r.csv"), **given)


@pytest.mark.parametrize(
    "given, message",
    [
        (dict(engine=EngineOptions(batch_size="64")), "--batch-size must be an integer, not '64'"),
        (dict(engine=EngineOptions(batch_size=None)), "--batch-size must be an integer, not None"),
        (dict(engine=EngineOptions(batch_size=1.5)), "--batch-size must be an integer, not 1.5"),
        (dict(engine=EngineOptions(batch_size=True)), "--batch-size must be an integer, not True"),
        (dict(engine=EngineOptions(shard_size=10**30)), f"--shard-size must be at most {2**63 - 1}"),
        (dict(engine=EngineOptions(engine=None)), "unknown --engine None"),
        (dict(engine=EngineOptions(ray=None)), "ray must be RayOptions, not None"),
        (dict(engine=None), "engine must be EngineOptions, not None"),
        (dict(labelling=Labelling(threshold=None)), "--threshold must be a number, not None"),
        (dict(labelling=Labelling(uncertain=(0.2, 0.5, 0.8))), "--uncertain takes two numbers"),
        (dict(labelling=Labelling(uncertain="0.2")), "--uncertain takes two numbers"),
    ],
)
def test_values_of_the_wrong_kind_are_one_line(given, message):
    """Options built by hand in Python: a string, None or a float where an integer goes, a band
    of three numbers, a missing nested options object: a UserError, not a crash deep inside."""
    with pytest.raises(UserError) as refused:
        check_options(predict_options(**given))
    assert str(refused.value).startswith(message)


def test_what_the_options_admit_passes():
    """Defaults, None where None means "not given", numpy numbers and a band given as a list."""
    check_options(predict_options())
    check_options(predict_options(engine=EngineOptions(batch_size=np.int64(8), runtime_threads=None)))
    check_options(predict_options(labelling=Labelling(threshold=np.float32(0.3), uncertain=[0.2, 0.8])))
    check_options(ReviewOptions(Path("t.csv"), uncertain=(0, 1), port=65535))


def test_an_empty_ray_address_is_not_given():
    """--ray-address "" (an unset variable in a script) means "not given", as it did before the
    engine's own options were checked generically: accepted with --engine local."""
    from catsdogs_batch.options import RayOptions

    check_options(predict_options(engine=EngineOptions(ray=RayOptions(address=""))))
    with pytest.raises(UserError, match=r"^--ray-address needs --engine ray$"):
        check_options(predict_options(engine=EngineOptions(ray=RayOptions(address="auto"))))


def test_a_poll_interval_of_inf_is_refused_by_the_parser(capsys):
    """`submit --poll-interval inf` slept forever between looks (a traceback from sleep(inf) with
    --wait inf); an hour between looks is the most that makes sense."""
    from catsdogs_batch.cli import main

    assert main(["submit", "--status", "--poll-interval", "inf"]) == 2
    assert "inf is out of range: must be in [0.01, 3600]" in capsys.readouterr().err
