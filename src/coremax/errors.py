"""Errors a user can cause. Scripts print their message as one sentence instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: a file, a config key, a name. The message says what and what to do."""
