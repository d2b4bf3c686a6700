"""The one exception type users see: a problem with their input, explained in one line.

The CLI turns it into a single message and exit code 2; anything else is a bug.
"""


class FlowroutesError(Exception):
    """Bad input or an unusable model, with a message that says what to do."""
