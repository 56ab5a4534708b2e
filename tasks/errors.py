"""The one exception type that means "the user's input or config is wrong" (exit code 2)."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class InputError(ValueError):
    """Bad input data or config. The message is one line that names the file, column or key."""
