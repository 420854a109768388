"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing credentials, ...): printed, never a traceback."""
