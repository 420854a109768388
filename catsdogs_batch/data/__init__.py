"""The photos: finding and decoding them (images.py, one decode-and-resize for training and
prediction), labelled folders and their split (dataset.py), and a review's corrections
(corrections.py)."""
