"""Exceptions raised by flashsim; each message names the file, branch, unit, key or value at fault.

Every error a user can cause (a bad file, unit, setting or output path) derives from
:class:`FlashsimError`: the ``flashsim`` command prints its message on one line and exits 1, and a
distributed run fails the partition at once instead of retrying it. Anything else is a bug.
"""


class FlashsimError(Exception):
    """Base class of every flashsim error."""


class InputError(FlashsimError, ValueError):
    """An input file, branch or value is missing, unreadable or of the wrong type."""


class UnitError(FlashsimError, ValueError):
    """A unit specification or weight file is invalid or incompatible."""


class ChainError(FlashsimError, ValueError):
    """A chain cannot be resolved (cycle, or a column nobody provides)."""


class TransformError(FlashsimError, ValueError):
    """A preprocessing step's option is invalid, or a column's value lies outside the step's domain."""


class ConfigError(FlashsimError, ValueError):
    """A setting or configuration file (option value, thresholds, detector card) is invalid."""


class OutputError(FlashsimError, OSError):
    """An output cannot be written: unwritable directory, a directory in the way, or the path of an input."""
