"""User-facing errors.

Anything a user can cause (bad flags, missing files, wrong shapes at the API
boundary) raises :class:`QrnnLmError` -- or ``ValueError`` at the tensor API --
with one sentence that says what was wrong and what to do.  The command-line
entry points catch :class:`QrnnLmError` and print only that sentence.
"""


class QrnnLmError(Exception):
    """An error whose message is meant for the user, not a traceback."""
