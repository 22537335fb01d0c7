"""Helpers the tests share: temp dvc repositories, servers they start, tuning settings."""
