"""Scoring a trained model: the evaluate and robustness stages."""
