"""`catsdogs train` (train.py), its fitted linear head (linear_head.py) and its temperature
(calibration.py)."""
