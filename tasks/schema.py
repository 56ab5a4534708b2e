"""The names every room shares about rows: the splits, and the columns a table reserves for each row's label
and split (`tasks.store.tables` writes them; `tasks.core.dataset` refuses user features that take them)."""

SPLITS = ("train", "val", "test")
LABEL = "__label__"
SPLIT = "__split__"
BUILTIN_LABEL, BUILTIN_SPLIT = "__target__", "__given_split__"  # a built-in source's label and split columns
