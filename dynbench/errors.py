"""One error type for everything a user can get wrong.

The CLI maps a `DynbenchError` to one line on stderr (`Error: …`) and exit code 2; the message
must say what to do instead. Anything else is a bug and keeps its traceback.
"""


class DynbenchError(Exception):
    """A usage or input error; the message names the fix."""

    exit_code = 2
