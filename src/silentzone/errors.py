"""One exception type for every user-facing error: the CLI prints its message as one line."""


class SilentzoneError(Exception):
    """Bad input or state the user can fix. The message names the file, the field and the fix."""


class WriteError(SilentzoneError, OSError):
    """A write that failed for lack of space or permission (silentzone.io.write_error): one line like
    every SilentzoneError, and still an OSError, so a best-effort writer (the quant cache) keeps going."""
