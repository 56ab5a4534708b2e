"""The code a cache key covers: every definition a stage function can reach, at the grain of functions.

A module is read as top-level *blocks*: a function or class (with its decorators), an assignment (a
constant), or a *prelude* statement that defines nothing (it runs on import: ``os.environ.setdefault``).
From an entry (``tasks.train_svc:train_svc``) the walk follows every name a block uses (an attribute chain
such as ``faults.point`` resolved through the module's imports, imports inside functions included, and the
names inside f-strings) to the block that defines it in a ``tasks.*`` module, at any depth. The digest is
over the blocks reached, each with the preludes of its module and of its packages.

What a block's text leaves out, so that editing it reruns nothing: comments, docstrings (any statement that
is only a string), the ``description=`` texts of config fields (the CLI's help) and the message strings of
logging calls (``log.info("...", ...)``, the literal only: its arguments count). Everything else counts.

The entry's own decorator is not followed: it is the stage cache (`tasks.store.cache.stage`), which computes the
key and records the result, not the artifact; its arguments are in the entry's text, so changing them counts.

Limits, written down: a method reached only through an instance (``ref.at(root)`` where the class is never
named in reached code) is not followed; type annotations are names like any other, so a stage that annotates
``ArtifactRef`` reaches the class. A name bound by ``from x import *`` or looked up by string
(``getattr(module, name)``, ``importlib``) reaches the whole module only when the module itself is named.

Read with `tokenize`, not `ast`: building AST objects in several threads at once can fail on CPython 3.11
(gh-106905), and Prefect and JAX parse source in the threads a run starts.
"""

from __future__ import annotations

import functools
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from tasks.store.artifacts import sha256_text

TASKS_DIR = Path(__file__).resolve().parents[1]
WHOLE = "*"  # a unit that stands for a whole module (named bare, or a name not found in it)
PRELUDE = "<prelude>"
_CONTINUED = ("else", "elif", "except", "finally")
_LOG_CALLS = ("debug", "info", "warning", "error", "exception", "critical")
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING}
_FSTRING_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def module_file(name: str, tasks_dir: Path = TASKS_DIR) -> Path | None:
    """The source file of ``tasks.*`` module ``name`` (found on disk, nothing imported), or None."""
    parts = name.split(".")
    if parts[0] != "tasks":
        return None
    base = tasks_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Block:
    """One top-level statement (with the lines nested in it): its normalised text and the names it uses."""

    text: list[str] = field(default_factory=list)
    refs: set[tuple[str, ...]] = field(default_factory=set)  # attribute chains: ("faults", "point")
    decorators: set[tuple[str, ...]] = field(default_factory=set)  # the names its decorator lines use
    imports: dict[str, str] = field(default_factory=dict)  # imports inside it: alias -> tasks.* target


@dataclass
class Module:
    name: str
    defs: dict[str, list[Block]]  # name -> the blocks that bind it
    prelude: list[Block]
    imports: dict[str, str]  # module-level imports: alias -> tasks.* target (a module, or module.attr)


def _lines(source: str):
    """(depth, tokens) per logical line; depth is the indentation level."""
    depth, line, line_depth = 0, [], 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            if line:
                yield line_depth, line
            line = []
        elif tok.type not in _SKIP:
            if not line:
                line_depth = depth
            line.append(tok)


def _dotted(tokens, i: int) -> tuple[str, int]:
    parts = []
    while i < len(tokens) and tokens[i].type == tokenize.NAME and tokens[i].string not in ("as", "import"):
        parts.append(tokens[i].string)
        i += 1
        if i < len(tokens) and tokens[i].string == ".":
            i += 1
        else:
            break
    return ".".join(parts), i


def _import_aliases(tokens, package: str) -> dict[str, str]:
    """alias -> imported ``tasks.*`` name for one ``import`` / ``from ... import`` logical line."""
    out: dict[str, str] = {}
    if tokens[0].string == "import":
        i = 1
        while i < len(tokens):
            name, i = _dotted(tokens, i)
            if i < len(tokens) and tokens[i].string == "as":  # ``import a.b as c`` binds c to a.b
                out[tokens[i + 1].string] = name
                i += 2
            else:  # ``import a.b`` binds a
                out[name.split(".")[0]] = name.split(".")[0]
            i += 1  # ","
    else:
        i, level = 1, 0
        while i < len(tokens) and tokens[i].string in (".", "..."):
            level += len(tokens[i].string)
            i += 1
        base, i = _dotted(tokens, i)
        if level:
            parts = package.split(".")
            parts = parts[: len(parts) - (level - 1)]
            base = ".".join([*parts, base] if base else parts)
        i += 1  # "import"
        names = [t for t in tokens[i:] if t.string not in ("(", ")", ",")]
        j = 0
        while j < len(names):
            name, alias = names[j].string, names[j].string
            if j + 2 < len(names) and names[j + 1].string == "as":
                alias = names[j + 2].string
                j += 3
            else:
                j += 1
            out[alias] = base if name == "*" else f"{base}.{name}"
    return {a: t for a, t in out.items() if t == "tasks" or t.startswith("tasks.")}


def _text(tokens) -> str:
    """A logical line as text without the texts that make nothing: the ``description=`` strings of config
    fields (the CLI's help) and the message of a logging call (``log.info("...", ...)``)."""
    kept, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        kept.append(tok.string)
        documentation = (tok.string == "description" and i + 1 < len(tokens) and tokens[i + 1].string == "="
                         and i > 0 and tokens[i - 1].string in ("(", ","))
        message = (tok.string in _LOG_CALLS and i > 0 and tokens[i - 1].string == "." and i + 1 < len(tokens)
                   and tokens[i + 1].string == "(")
        if documentation or message:
            kept.append(tokens[i + 1].string)
            i += 2
            while i < len(tokens) and tokens[i].type == tokenize.STRING:
                i += 1
            continue
        i += 1
    return " ".join(kept)


def _refs(tokens) -> set[tuple[str, ...]]:
    refs: set[tuple[str, ...]] = set()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == tokenize.NAME and not (i and tokens[i - 1].string == "."):
            chain = [tok.string]
            j = i + 1
            while j + 1 < len(tokens) and tokens[j].string == "." and tokens[j + 1].type == tokenize.NAME:
                chain.append(tokens[j + 1].string)
                j += 2
            refs.add(tuple(chain))
        elif tok.type == tokenize.STRING and re.match(r"(?i)[rb]*f", tok.string):
            for inner in re.findall(r"\{([^{}]*)\}", tok.string):
                refs.update(tuple(m.split(".")) for m in _FSTRING_NAME.findall(inner))
        i += 1
    return refs


def _bound_names(tokens) -> list[str]:
    """The names a top-level statement binds (a def, a class, the targets of an assignment); [] for a prelude."""
    first = tokens[0].string
    if first in ("def", "class"):
        return [tokens[1].string]
    if first == "async" and len(tokens) > 2:
        return [tokens[2].string]
    if keyword.iskeyword(first):  # if, try, with, for ...: a prelude
        return []
    depth, names = 0, []
    for i, tok in enumerate(tokens):
        if tok.string in "([{" and tok.type == tokenize.OP:
            depth += 1
        elif tok.string in ")]}" and tok.type == tokenize.OP:
            depth -= 1
        elif depth == 0 and tok.type == tokenize.OP and tok.string in ("=", ":", "+=", "|="):
            return names
        elif depth == 0 and tok.type == tokenize.NAME and not (i and tokens[i - 1].string == "."):
            names.append(tok.string)
    return []


@functools.lru_cache(maxsize=512)
def parse(name: str, source: str, is_package: bool) -> Module:
    """Module ``name``'s blocks, preludes and ``tasks.*`` imports (memoised by source text)."""
    package = name if is_package else name.rpartition(".")[0]
    module = Module(name, {}, [], {})
    block: Block | None = None
    in_prelude = False
    decorators: list = []
    for depth, tokens in _lines(source):
        is_import = tokens[0].string in ("import", "from") and any(t.string == "import" for t in tokens)
        if depth == 0:
            if is_import:
                module.imports.update(_import_aliases(tokens, package))
                block = None
                continue
            if tokens[0].string in _CONTINUED and block is not None:  # else/except/finally of a top-level block
                block.text.append(f"0 {_text(tokens)}")
                block.refs |= _refs(tokens)
                continue
            if tokens[0].string == "@":
                decorators.append(tokens)
                continue
            block = Block()
            for line in decorators:
                block.text.append(f"0 {_text(line)}")
                block.decorators |= _refs(line)
            block.text.append(f"0 {_text(tokens)}")
            block.refs |= _refs(tokens)
            decorators = []
            names = _bound_names(tokens)
            in_prelude = not names
            for n in names:
                module.defs.setdefault(n, []).append(block)
            if in_prelude:
                module.prelude.append(block)
            continue
        if block is None:
            continue
        if all(t.type == tokenize.STRING for t in tokens):
            continue  # a docstring
        if is_import:
            aliases = _import_aliases(tokens, package)
            block.imports.update(aliases)
            if in_prelude:  # ``if TYPE_CHECKING: from ... import``, ``try: import``
                module.imports.update(aliases)
        block.text.append(f"{depth} {_text(tokens)}")
        block.refs |= _refs(tokens)
    return module


class _Modules(dict):
    """The ``tasks.*`` modules one walk reads: each file read and parsed once (None: not a ``tasks`` module)."""

    def __init__(self, tasks_dir: Path):
        super().__init__()
        self.tasks_dir = tasks_dir

    def __missing__(self, name: str) -> Module | None:
        path = module_file(name, self.tasks_dir)
        self[name] = None if path is None else parse(name, path.read_text(), path.name == "__init__.py")
        return self[name]


def _target(target: str, rest: tuple[str, ...], modules: _Modules) -> list[tuple[str, str]]:
    """The units an imported name (``tasks.x`` or ``tasks.x.attr``) followed by attributes ``rest`` stands for."""
    if modules[target] is not None:
        if rest:
            return _target(f"{target}.{rest[0]}", rest[1:], modules)
        return [(target, WHOLE)]
    owner, _, attr = target.rpartition(".")
    module = modules[owner]
    if module is None:
        return []
    if attr in module.defs:
        return [(owner, attr)]
    if attr in module.imports and module.imports[attr] != target:  # a name the module re-exports
        return _target(module.imports[attr], rest, modules)
    return [(owner, WHOLE)]


def _resolve(module: Module, chain: tuple[str, ...], local: dict[str, str], modules: _Modules) -> list[tuple[str, str]]:
    head = chain[0]
    if head in local:
        return _target(local[head], chain[1:], modules)
    if head in module.defs:
        return [(module.name, head)]
    if head in module.imports:
        return _target(module.imports[head], chain[1:], modules)
    return []


def code_units(entry: str, tasks_dir: Path = TASKS_DIR) -> dict[str, str]:
    """``"module:name"`` -> SHA-256 of its text, for every unit ``entry`` (``"tasks.x:fn"``, or a bare module
    name for all of it) reaches, preludes (``"module:<prelude>"``) included; sorted by name."""
    module_name, _, name = entry.partition(":")
    entry_unit = (module_name, name or WHOLE)
    todo = [entry_unit]
    seen: set[tuple[str, str]] = set()
    out: dict[str, str] = {}
    modules = _Modules(tasks_dir)
    while todo:
        unit = todo.pop()
        if unit in seen:
            continue
        seen.add(unit)
        owner, what = unit
        module = modules[owner]
        if module is None:
            continue
        parents = owner.split(".")  # the module's own prelude and its packages'
        todo.extend((".".join(parents[:i]), PRELUDE) for i in range(1, len(parents) + 1))
        if what == WHOLE:  # every definition of the module, each a unit of its own
            todo.extend((owner, n) for n in module.defs)
            continue
        blocks = module.prelude if what == PRELUDE else module.defs.get(what, [])
        out[f"{owner}:{what}"] = sha256_text("\n".join(line for b in blocks for line in b.text))
        for block in blocks:
            # the entry's decorator (the stage cache itself: `tasks.store.cache.stage`) is not followed
            for chain in block.refs | (set() if unit == entry_unit else block.decorators):
                todo.extend(_resolve(module, chain, block.imports, modules))
    return dict(sorted(out.items()))
