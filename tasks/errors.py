"""The one exception type that means "the user's input or config is wrong" (exit code 2)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class InputError(ValueError):
    """Bad input data or config. The message is one line that names the file, column or key.

    A message that quotes what the user typed may carry line breaks or control characters (a ``--set`` key
    with a newline, a column name): they are shown escaped, so the message stays one line.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(printable(message))


def printable(value: object) -> str:
    """``str(value)`` with control characters (line breaks, terminal escape sequences) shown escaped: one line
    that a terminal prints as it is."""
    text = str(value)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
