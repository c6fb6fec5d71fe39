"""What the model is run on: calibration corpora (corpora.py) and benchmark items (items.py)."""
