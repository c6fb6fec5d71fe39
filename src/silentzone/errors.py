"""One exception type for every user-facing error: the CLI prints its message as one line."""


class SilentzoneError(Exception):
    """Bad input or state the user can fix. The message names the file, the field and the fix."""
