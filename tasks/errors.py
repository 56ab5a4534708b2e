"""The one exception type that means "the user's input or config is wrong" (exit code 2)."""


class InputError(ValueError):
    """Bad input data or config. The message is one line that names the file, column or key."""
