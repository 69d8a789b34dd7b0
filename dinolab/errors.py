"""User-facing errors.

A :class:`DinolabError` is a problem with the user's input (a file, a key, a
value) rather than a bug. Its message names the offending thing and the fix;
the command line prints it without a traceback and exits with status 2.
"""


class DinolabError(Exception):
    """An error caused by user input; the message says what and how to fix it."""


class ConfigError(DinolabError, ValueError):
    """An invalid configuration key or value."""


class DataError(DinolabError):
    """Missing, empty or unreadable input data."""


class WeightsError(DinolabError):
    """A weights file that cannot be read or does not match the model."""
