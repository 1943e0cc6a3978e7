"""Errors a user can cause: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A problem with the user's input (paths, axes, data, options).

    The message must be one line that names the problem; the CLI prints it
    without a traceback and exits with code 2.
    """


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
