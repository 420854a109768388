"""Predicting in batches: the engines (engine.py, local_engine.py, ray_engine.py), the predictor
and the runtimes that run a model (predictor.py, runtimes.py, quantize.py), shards and results
tables (shards.py, tables.py), and the commands that predict: `submission`, `export`."""
