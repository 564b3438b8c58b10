"""The one exception type for problems the user can fix."""


class RefusalScopeError(Exception):
    """Bad input or environment. The message says what was wrong and what to do.

    The CLI prints it as one line and exits with status 2; library callers can catch it.
    Internal invariants use ``assert`` instead.
    """
