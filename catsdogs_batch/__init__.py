"""catsdogs-batch: download, train, predict and bulk-label for the Kaggle Dogs vs. Cats competitions."""

__version__ = "0.1.0"
