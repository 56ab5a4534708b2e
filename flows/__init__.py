"""marginflow flows and CLI: they wire stages and parse options, nothing more."""
