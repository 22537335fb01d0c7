"""Fitting a model: the loop, the train stage, the finders and the profiler."""
