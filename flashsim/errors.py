"""Exceptions raised by flashsim; each message names the file, branch, unit or value at fault."""


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
