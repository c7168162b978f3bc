"""The error users see: one line saying what is wrong and what to do."""


class UserError(ValueError):
    """Bad input from a user: the command line prints it as one line, exit code 2."""
