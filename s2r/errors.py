"""The error type for bad input: the command line prints its message and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a value); the message names it and what was expected."""
