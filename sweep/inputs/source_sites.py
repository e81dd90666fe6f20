"""Source mode (docs/source_mode.md): a swept or fixed key is the address of a literal site in the script a
trial runs, and each trial runs a copy of the script with its values written at those sites.

Addresses are resolved by parsing the script, never by running it:

- `NAME`: a module-level assignment `NAME = ...` (or `NAME: T = ...`), outside every function and class;
- `Owner.name`: the keyword `name=` of a call `Owner(...)` or `mod.Owner(...)`; else an assignment or an
  annotated field `name` in the body of `class Owner`; else the default of the parameter `name` of
  `def Owner` or of `Owner.__init__`. The first of these kinds that the script has wins, because that is
  the order in which a value takes effect: a call's keyword overrides a field or a default, a dataclass
  field overrides its `__init__`'s default;
- `ADDRESS@LINE`: where several sites of that kind remain, the one on line LINE.

An address must resolve to exactly one site. A value is written as the Python literal that reads back as
that exact value (`repr` of a float); a param's template (`expr: "grad_scale * {}"`) keeps the code around
it. An edit is checked before it is used: the edited script parses, its syntax tree equals the original's
apart from the addressed sites, and each site holds what was written there.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import math
import re
import tokenize
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from sweep.errors import InputError

HOLE = "{}"
_ADDRESS = re.compile(r"^(?:[A-Za-z_]\w*\.)?[A-Za-z_]\w*(?:@[1-9]\d*)?$")
_LINES = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
ASSIGNMENT, KEYWORD, FIELD, DEFAULT = "assignment", "keyword", "field", "default"
_RANK = {ASSIGNMENT: 0, KEYWORD: 0, FIELD: 1, DEFAULT: 2}   # lower wins
_SHOWN_LINE = 160        # characters of a source line shown in an error


def check_address(key: Any, where: str) -> str:
    if not isinstance(key, str) or not _ADDRESS.match(key):
        raise InputError(where, f"{key!r} is not a site address (NAME, Owner.name, optionally @LINE)")
    return key


def python_literal(value: Any) -> str:
    """`value` as Python source that evaluates to exactly it."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write a non-finite value {value!r} as a literal")
        return repr(value)
    if isinstance(value, (int, str)):
        return repr(value)
    raise ValueError(f"cannot write a {type(value).__name__} as a literal: {value!r}")


def check_template(expr: Any, where: str) -> str:
    """A param's `expr`: Python code with `{}` where the value goes, an expression once filled."""
    if not isinstance(expr, str) or HOLE not in expr:
        raise InputError(where, f"must be Python code with {HOLE} where the value goes, got {expr!r}")
    try:
        ast.parse(fill(expr, "1.0"), mode="eval")
    except SyntaxError as e:
        raise InputError(where, f"{expr!r} is not a Python expression once {HOLE} is filled ({e.msg})") from None
    return expr


def fill(expr: str, literal: str) -> str:
    # A negative literal in a template is parenthesised, so `{} ** 2` keeps its meaning.
    return expr.replace(HOLE, f"({literal})" if literal.startswith("-") else literal)


@dataclass(frozen=True)
class Site:
    address: str
    kind: str
    owner: str               # what holds the site, for messages: `a call to CastedLinearT`, `class Hyperparameters`
    value: ast.expr = field(compare=False, repr=False)   # the expression an edit replaces
    first_line: int          # where the site starts: its keyword, target or parameter
    last_line: int           # where its value ends

    @property
    def line(self) -> int:
        return self.value.lineno

    def covers(self, line: int) -> bool:
        return self.first_line <= line <= self.last_line


def _outside_scopes(node: ast.AST):
    """The nodes under `node` that are not inside a function, class or lambda."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            yield child
            yield from _outside_scopes(child)


def _assigned(stmt: ast.stmt) -> tuple[str, ast.expr] | None:
    """(name, value) of `name = value` or `name: T = value`; None for anything else (several targets too,
    since an edit would change them all)."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id, stmt.value
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id, stmt.value
    return None


def _defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef):
    """(parameter, default) of each parameter of `fn` that has one."""
    positional = [*fn.args.posonlyargs, *fn.args.args]
    yield from zip(positional[len(positional) - len(fn.args.defaults):], fn.args.defaults)
    yield from ((arg, d) for arg, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults) if d is not None)


class ScriptSites:
    """Every literal site of one script, by address."""

    def __init__(self, source: bytes, name: str):
        self.name = name
        self.source = source
        try:
            self.tree = ast.parse(source, filename=name)
        except SyntaxError as e:
            raise InputError(name, f"cannot parse it ({e.msg}, line {e.lineno})") from None
        self.lines = _LINES.findall(_decode(source))
        self.sites: dict[str, list[Site]] = {}
        self._collect()

    def _add(self, address: str, kind: str, owner: str, value: ast.expr, first_line: int) -> None:
        self.sites.setdefault(address, []).append(
            Site(address, kind, owner, value, first_line, value.end_lineno or value.lineno))

    def _collect(self) -> None:
        for node in _outside_scopes(self.tree):
            assigned = _assigned(node) if isinstance(node, ast.stmt) else None
            if assigned is not None:
                self._add(assigned[0], ASSIGNMENT, "the module", assigned[1], node.lineno)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                owner = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                for kw in node.keywords:
                    if kw.arg is not None:
                        self._add(f"{owner}.{kw.arg}", KEYWORD, f"a call to {owner}", kw.value, kw.lineno)
            elif isinstance(node, ast.ClassDef):
                self._class(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "__init__":
                for arg, default in _defaults(node):
                    self._add(f"{node.name}.{arg.arg}", DEFAULT, f"def {node.name}", default, arg.lineno)

    def _class(self, node: ast.ClassDef) -> None:
        for stmt in node.body:
            assigned = _assigned(stmt)
            if assigned is not None:
                self._add(f"{node.name}.{assigned[0]}", FIELD, f"class {node.name}", assigned[1], stmt.lineno)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "__init__":
                for arg, default in _defaults(stmt):
                    self._add(f"{node.name}.{arg.arg}", DEFAULT, f"def {node.name}.__init__", default, arg.lineno)

    def shown(self, site: Site) -> str:
        """`line N: <the source line>`, for messages."""
        text = self.lines[site.first_line - 1].strip()
        if len(text) > _SHOWN_LINE:
            text = text[:_SHOWN_LINE - 3] + "..."
        return f"line {site.first_line}: {text}"

    def describe(self, site: Site) -> str:
        if site.kind == ASSIGNMENT:
            return f"the assignment of {site.address}"
        name = site.address.split(".")[1]
        what = {KEYWORD: f"the keyword {name}=", FIELD: f"the field {name}",
                DEFAULT: f"the default of the parameter {name}"}[site.kind]
        return f"{what} of {site.owner}"

    def resolve(self, key: str, where: str) -> Site:
        address, _, at = key.partition("@")
        found = self.sites.get(address, [])
        if not found:
            close = difflib.get_close_matches(address, list(self.sites), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise InputError(where, f"`{address}`: no such site in {self.name}{hint}")
        rank = min(_RANK[s.kind] for s in found)
        top = [s for s in found if _RANK[s.kind] == rank]
        if at:
            return self._at_line(key, int(at), top, found, where)
        if len(top) > 1:
            listing = "\n".join(f"  {self.shown(s)}" for s in top)
            raise InputError(where, f"`{address}`: {len(top)} sites in {self.name}; name one as "
                                    f"`{address}@LINE`:\n{listing}")
        return top[0]

    def _at_line(self, key: str, line: int, top: list[Site], found: list[Site], where: str) -> Site:
        chosen = [s for s in top if s.covers(line)]
        if len(chosen) == 1:
            return chosen[0]
        listing = "\n".join(f"  {self.shown(s)}" for s in top)
        if chosen:
            raise InputError(where, f"`{key}`: line {line} of {self.name} holds {len(chosen)} such sites, which "
                                    f"a line cannot tell apart:\n{listing}")
        shadowed = [s for s in found if s.covers(line)]
        if shadowed:
            raise InputError(where, f"`{key}`: line {line} of {self.name} holds {self.describe(shadowed[0])}, "
                                    f"which {self.describe(top[0])} overrides; the sites that take effect:\n"
                                    f"{listing}")
        raise InputError(where, f"`{key}`: no site of `{key.partition('@')[0]}` on line {line} of {self.name}; "
                                f"its sites:\n{listing}")

    def resolve_all(self, keys: dict[str, str]) -> dict[str, Site]:
        """Each key's site; `keys` maps each key to where it was set. Two keys on one site are an error."""
        sites: dict[str, Site] = {}
        for key, where in keys.items():
            site = self.resolve(key, where)
            for other, taken in sites.items():
                if taken.value is site.value:
                    raise InputError(where, f"`{key}` and `{other}` ({keys[other]}) are the same site of "
                                            f"{self.name}, {self.shown(site)}")
                if _inside(site.value, taken.value) or _inside(taken.value, site.value):
                    raise InputError(where, f"the sites of `{key}` and `{other}` ({keys[other]}) overlap: one "
                                            f"is part of the other's value ({self.shown(site)})")
            sites[key] = site
        return sites


def _inside(inner: ast.expr, outer: ast.expr) -> bool:
    return ((outer.lineno, outer.col_offset) <= (inner.lineno, inner.col_offset)
            and (inner.end_lineno, inner.end_col_offset) <= (outer.end_lineno, outer.end_col_offset))


def _decode(source: bytes) -> str:
    encoding, _ = tokenize.detect_encoding(BytesIO(source).readline)
    return source.decode(encoding)


@dataclass(frozen=True)
class Edit:
    """A script with values written at its sites."""

    name: str
    original: bytes
    edited: bytes
    sites: dict[str, Site]   # key -> its site in the original
    written: dict[str, str]  # key -> the code written there

    @property
    def sha256(self) -> str:
        return sha256(self.edited)

    def diff(self, original_path: str, copy_path: str) -> str:
        """The unified diff from the original to the copy, as `diff -u` prints it; each file's sha256 is
        where `diff -u` puts a date."""
        before = [_ending(line) for line in _LINES.findall(_decode(self.original))]
        after = [_ending(line) for line in _LINES.findall(_decode(self.edited))]
        return "".join(difflib.unified_diff(before, after, original_path, copy_path,
                                            f"sha256:{sha256(self.original)}", f"sha256:{self.sha256}"))


def _ending(line: str) -> str:
    return line if line.endswith(("\n", "\r")) else line + "\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def edit(sites: ScriptSites, values: dict[str, Any], exprs: dict[str, str], where: str) -> Edit:
    """`sites`' script with `values` (key -> value) written at the keys' sites, each through its template
    in `exprs` if it has one; checked (see the module docstring) before it is returned."""
    resolved = sites.resolve_all({key: where for key in values})
    written = {}
    for key, value in values.items():
        literal = python_literal(value)
        written[key] = fill(exprs[key], literal) if key in exprs else literal
    text = _decode(sites.source)
    starts = [0]
    for line in sites.lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, col: int) -> int:
        # ast columns count UTF-8 bytes
        return starts[line - 1] + len(sites.lines[line - 1].encode()[:col].decode())

    for key in sorted(resolved, key=lambda k: (resolved[k].value.lineno, resolved[k].value.col_offset), reverse=True):
        node = resolved[key].value
        code = written[key]
        span = node.end_lineno - node.lineno
        if span:
            # Keep the lines after the site where they were, so tracebacks of the copy match the original.
            code = f"({code}{chr(10) * span})"
        text = text[:offset(node.lineno, node.col_offset)] + code + text[offset(node.end_lineno, node.end_col_offset):]
    encoding, _ = tokenize.detect_encoding(BytesIO(sites.source).readline)
    result = Edit(sites.name, sites.source, text.encode(encoding), resolved, written)
    _check(sites, result, values, exprs)
    return result


def _check(sites: ScriptSites, result: Edit, values: dict[str, Any], exprs: dict[str, str]) -> None:
    """The edit changed the addressed sites and nothing else, and each holds what was written there."""
    def fail(why: str):
        raise InputError(sites.name, f"the edited copy is not the script with only the addressed sites changed: "
                                     f"{why}")

    try:
        tree = ast.parse(result.edited, filename=sites.name)
    except SyntaxError as e:
        fail(f"it does not parse ({e.msg}, line {e.lineno})")
    by_node = {id(site.value): key for key, site in result.sites.items()}
    found: dict[str, ast.AST] = {}
    stack = [(sites.tree, tree)]
    while stack:
        a, b = stack.pop()
        if id(a) in by_node:
            found[by_node[id(a)]] = b
        elif type(a) is not type(b):
            fail(f"a {type(a).__name__} became a {type(b).__name__}")
        elif isinstance(a, ast.AST):
            stack.extend((getattr(a, f, None), getattr(b, f, None)) for f in a._fields)
        elif isinstance(a, list):
            if len(a) != len(b):
                fail("a list of nodes changed its length")
            stack.extend(zip(a, b))
        elif a != b:
            fail(f"{a!r} became {b!r}")
    for key, code in result.written.items():
        node = found.get(key)
        if node is None or ast.dump(node) != ast.dump(ast.parse(code.strip(), mode="eval").body):
            fail(f"the site of `{key}` does not hold {code}")
        if key not in exprs:
            read = ast.literal_eval(node)
            if type(read) is not type(values[key]) or read != values[key]:
                fail(f"the site of `{key}` reads back as {read!r}, not {values[key]!r}")
