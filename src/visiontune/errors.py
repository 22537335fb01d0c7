"""The one error type users see: a message for a single line, never a traceback."""


class VisiontuneError(Exception):
    """A failure caused by input (params, data, network): reported as one line."""
