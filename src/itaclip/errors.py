"""The one exception type users see: a message that says what is wrong and how to fix it."""


class ItaclipError(Exception):
    """A user-facing error (bad input, missing weights, bad option). The CLI prints it on one line."""
