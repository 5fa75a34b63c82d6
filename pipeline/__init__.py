"""Data, training loop, scoring and evaluation for catalog-classifier."""
