"""catsdogs-batch: download, train, predict and bulk-label for the Kaggle Dogs vs. Cats competitions.

The jobs are Python functions too (api.py, docs/python.md):

    import catsdogs_batch as cd
    run = cd.train("data/dogs-vs-cats-redux-kernels-edition/train")
    table = cd.predict(run, "~/photos")          # a pandas DataFrame, one row per photo
"""

from importlib.metadata import version

__version__ = version("catsdogs-batch")  # setup.cfg's

JOBS = ("download", "train", "predict", "label", "submission")


def __getattr__(name: str):
    """The jobs of api.py, imported on first use (the command line does not pay for them)."""
    if name in JOBS:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
