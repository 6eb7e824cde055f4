"""A Griffe extension: the docstrings of pyro_vae and inference, written in reStructuredText's
habits, made into the Markdown that mkdocstrings renders. The source files are not touched.

* An attribute without a docstring takes its comment as one: the ``#:`` lines right above it
  (Sphinx's autodoc convention, used throughout) or the comment that ends its line.
* Sphinx roles, ``:func:`x```, ``:class:`~a.B```, ``:mod:`.priors```, ``:meth:`Run.lock```
  (also ``:data:``, ``:attr:``, ``:exc:``, ``:obj:``, ``:const:``), become cross-references:
  the target is resolved as Python would from the object that holds the docstring (its members,
  then its parents' scopes and imports; a leading ``.`` is relative to the module's package;
  else an absolute path), then

  - a public object of pyro_vae or inference: a link, ``[`x`][full.path]``, which mkdocs-autorefs
    resolves against the API reference pages (``--strict`` fails when no page renders it);
  - a private one (a name starting with ``_``, which the pages leave out) or one outside the two
    packages (``pyro.infer.ELBO``, ``torch``...): the name in code, unlinked;
  - a name that nothing defines or imports where the docstring is: the one object of the two
    packages whose path ends so, else (as Sphinx does without nitpicky) another library's
    object named briefly (``Study.ask``, optuna's, imported inside a function): code;
  - a target in the two packages that does not exist (a dotted path that leads nowhere, a name
    in scope whose member is missing, a name that several objects end with): a warning naming
    the docstring and the role, which fails ``mkdocs build --strict``.

  ``~`` shows the last part of the name only, as in Sphinx.
* reStructuredText's simple tables (``====  ====`` borders, three, or two for a table without a
  header row; a row whose first column is empty continues the row above) become Markdown tables.
* ``text::`` before an indented block becomes ``text:`` (Markdown shows the block as code either
  way); a lone ``::`` is dropped.
* A paragraph whose lines are aligned in columns stays laid out, as a code block.
* Doctest lines (``>>> ...``) become a ``pycon`` code block, without their ``# doctest:`` flags.
* A lone ``*`` in prose (``z*``) is escaped, so that two do not italicise what lies between.
* ``<word>`` in prose (``eval-<split>.json`` outside a code span) is escaped, so that the browser
  shows it instead of taking it for an HTML tag.

Every step leaves text that it already changed as it is, so a docstring seen twice is the same.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import logging
import re
import tokenize
from functools import cache
from pathlib import Path
from typing import Any

import griffe

PACKAGES = ("pyro_vae", "inference")
# Named under "mkdocs.", so that mkdocs counts its warnings (and --strict fails on them).
log = logging.getLogger("mkdocs.plugins.pyro_vae_docs")

ROLE = re.compile(
    r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|const|type):"
    r"`(?P<tilde>~?)(?P<target>[^`<>\s]+)`"
)
BORDER = re.compile(r"^(?P<indent> *)=+(?: +=+)+ *$")
TAG = re.compile(r"<(/?[A-Za-z][\w.-]*)>")
EMPHASIS = re.compile(r"\*\*[^*]+\*\*|(?<![\w*])\*(?=[^\s*])[^*]*?[^\s*]\*(?![\w*])")
CODE_SPAN = re.compile(r"(?<![:\w])(`+)(.+?)\1")
DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")


def _find(collection: Any, path: str) -> Any | None:
    """The object at ``path`` (an alias followed to its target), or None."""
    try:
        obj = collection[path]
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


_SUFFIXES: dict[int, dict[str, list[str]]] = {}


def _by_suffix(collection: Any) -> dict[str, list[str]]:
    """Every dotted tail of every object's path in the two packages (``Run``, ``Run.lock``,
    ``rundir.Run.lock``, ...) → the paths that end so."""
    if id(collection) not in _SUFFIXES:
        index: dict[str, list[str]] = {}

        def walk(obj: Any) -> None:
            parts = obj.path.split(".")
            for i in range(1, len(parts)):
                index.setdefault(".".join(parts[i:]), []).append(obj.path)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)

        for name in PACKAGES:
            if name in collection:
                walk(collection[name])
        _SUFFIXES[id(collection)] = index
    return _SUFFIXES[id(collection)]


def _resolve(obj: Any, target: str) -> str:
    """``target`` as a full dotted path, seen from ``obj`` (not checked to exist)."""
    module = obj.module
    if target.startswith("."):
        depth = len(target) - len(target.lstrip("."))
        base = module if module.is_init_module else module.parent
        for _ in range(depth - 1):
            base = base.parent if base is not None and base.parent is not None else base
        return f"{base.path}.{target.lstrip('.')}" if base is not None else target.lstrip(".")
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        return target
    return f"{resolved}.{rest}" if rest else resolved


class SphinxRoles(griffe.Extension):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._loading = False
        self._done: dict[int, Any] = {}

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name not in PACKAGES or self._loading:
            return
        # A reference may cross packages (pyro_vae names inference's objects): load both first.
        self._loading = True
        try:
            for name in PACKAGES:
                if name not in loader.modules_collection:
                    loader.load(name)
        finally:
            self._loading = False
        for name in PACKAGES:
            self._comments(loader.modules_collection[name])
        for name in PACKAGES:
            self._convert(loader.modules_collection[name], loader.modules_collection)

    def _comments(self, obj: Any) -> None:
        if obj.is_alias:
            return
        if obj.is_attribute and obj.docstring is None and obj.filepath and obj.lineno:
            text = attribute_comment(Path(obj.filepath), obj.lineno)
            if text:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        for member in obj.members.values():
            self._comments(member)

    def _convert(self, obj: Any, collection: Any) -> None:
        if obj.is_alias:
            return
        if obj.docstring is not None and id(obj.docstring) not in self._done:
            obj.docstring.value = markdown(obj.docstring.value, obj, collection)
            self._done[id(obj.docstring)] = obj.docstring  # kept alive: ids stay unique
        for member in obj.members.values():
            if not member.is_alias:
                self._convert(member, collection)


@cache
def _comment_lines(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """(line → ``#:`` comment alone on it, line → comment ending a line of code) of a file."""
    alone: dict[int, str] = {}
    trailing: dict[int, str] = {}
    source = path.read_text(encoding="utf-8")
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = token.start[0]
        if token.line[: token.start[1]].strip():
            trailing[line] = token.string[1:].strip()
        elif token.string.startswith("#:"):
            alone[line] = token.string[2:].strip()
    return alone, trailing


def attribute_comment(path: Path, lineno: int) -> str:
    """The ``#:`` block right above line ``lineno``, else the comment ending that line."""
    alone, trailing = _comment_lines(path)
    above = []
    line = lineno - 1
    while line in alone:
        above.insert(0, alone[line])
        line -= 1
    return " ".join(above) if above else trailing.get(lineno, "")


def markdown(text: str, obj: Any, collection: Any) -> str:
    """The docstring ``text`` of ``obj`` in Markdown (see the module docstring)."""
    text = _tables(text)
    text = _literal_markers(text)
    text = _doctests(text)
    text = _aligned(text)
    return _prose(text, lambda line: _roles(_stars(_tags(line)), obj, collection))


def _roles(line: str, obj: Any, collection: Any) -> str:
    def link(match: re.Match[str]) -> str:
        target = match["target"]
        path = _resolve(obj, target)
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
        if path.split(".", 1)[0] not in PACKAGES:
            if path != target or importlib.util.find_spec(path.split(".", 1)[0]) is not None:
                return f"`{title}`"  # resolved to, or named as, another package's object
            # A name that nothing in scope defines: one of ours by its unique name, else
            # (as Sphinx does without nitpicky) another library's, shown as code.
            matches = _by_suffix(collection).get(target, [])
            if len(matches) > 1:
                log.warning(
                    "ambiguous reference %s in the docstring of %s: %s",
                    match[0],
                    obj.path,
                    ", ".join(matches),
                )
            if len(matches) != 1:
                log.info(
                    "reference %s in the docstring of %s names nothing in pyro_vae or "
                    "inference: shown as code",
                    match[0],
                    obj.path,
                )
                return f"`{title}`"
            path = matches[0]
        found = _find(collection, path)
        if found is None:
            log.warning(
                "broken reference %s in the docstring of %s: no object %s", match[0], obj.path, path
            )
            return f"`{title}`"
        if any(
            part.startswith("_") and not part.startswith("__") for part in found.path.split(".")
        ):
            return f"`{title}`"
        return f"[`{title}`][{found.path}]"

    return ROLE.sub(link, line)


def _stars(line: str) -> str:
    """A lone ``*`` that opens or closes no emphasis (``z*``, ``a* ∈ (0, 1)``) escaped, so that
    two of them do not italicise the text between them; ``*word*`` and ``**bold**`` stay."""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match[0])
        return f"\x00{len(kept) - 1}\x00"

    marker = re.match(r"\s*\* ", line)  # a list item's bullet
    head, line = (line[: marker.end()], line[marker.end() :]) if marker else ("", line)
    line = EMPHASIS.sub(keep, line)
    line = head + re.sub(r"(?<![*\\])\*(?!\*)", r"\\*", line)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m[1])], line)


def _tags(line: str) -> str:
    return TAG.sub(r"&lt;\1&gt;", line)


def _prose(text: str, change: Any) -> str:
    """``change`` applied to the parts of ``text`` outside code: not inside fenced or indented
    blocks (4+ spaces after a blank line), nor inside backtick spans. Inside a block a role
    shows its target as written."""
    out: list[str] = []
    fenced = block = False
    blank = True
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append(line)
            blank = False
            continue
        if not line.strip():
            out.append(line)
            blank = True
            continue
        block = line.startswith("    ") and (blank or block)
        blank = False
        if fenced or block:
            out.append(ROLE.sub(lambda m: m["target"], line))
        else:
            out.append(_outside_code(line, change))
    return "\n".join(out)


def _outside_code(line: str, change: Any) -> str:
    """``change`` applied to ``line`` outside its code spans (a role's backticks, after a colon,
    open none)."""
    out, at = [], 0
    for span in CODE_SPAN.finditer(line):
        out += [change(line[at : span.start()]), span[0]]
        at = span.end()
    return "".join([*out, change(line[at:])])


def _literal_markers(text: str) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.rstrip()
        if stripped.endswith("::"):
            head = stripped[:-2]
            lines[i] = head.rstrip() if not head.strip() or head.endswith(" ") else head + ":"
    return "\n".join(lines)


def _aligned(text: str) -> str:
    """A paragraph of two or more lines each aligned in columns (a gap of 3+ spaces inside it)
    kept as it is laid out: a code block, where Markdown would run the lines together."""
    paragraphs = re.split(r"(\n[ \t]*\n)", text)
    for i, para in enumerate(paragraphs):
        lines = para.split("\n")
        if len(lines) >= 2 and all(
            line.strip() and not line.startswith(" ") and re.search(r"\S {3,}\S", line)
            for line in lines
        ):
            paragraphs[i] = "\n".join("    " + line.replace("``", "") for line in lines)
    return "".join(paragraphs)


def _doctests(text: str) -> str:
    out: list[str] = []
    in_block = fenced = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```") and not in_block:
            fenced = not fenced
        if fenced:
            out.append(line)
            continue
        if stripped.startswith(">>>") or (in_block and stripped.startswith("...")):
            if not in_block:
                if out and out[-1].strip():
                    out.append("")
                out.append("```pycon")
                in_block = True
            out.append(DOCTEST_FLAG.sub("", stripped))
            continue
        if in_block:
            out.append("```")
            in_block = False
        out.append(line)
    if in_block:
        out.append("```")
    return "\n".join(out)


def _tables(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = BORDER.match(lines[i])
        end = _table_end(lines, i) if match else None
        if end is None:
            out.append(lines[i])
            i += 1
            continue
        out.extend(_table(lines[i : end + 1], len(match["indent"])))
        i = end + 1
    return "\n".join(out)


def _table_end(lines: list[str], start: int) -> int | None:
    """The index of the closing border of the table opened at ``start``: the last of its two
    (no header) or three borders before a blank line."""
    borders = [start]
    for j in range(start + 1, len(lines) + 1):
        if j == len(lines) or not lines[j].strip():
            break
        if BORDER.match(lines[j]) and lines[j].strip() == lines[start].strip():
            borders.append(j)
            if len(borders) == 3:
                break
    return borders[-1] if len(borders) in (2, 3) and borders[-1] > start + 1 else None


def _table(block: list[str], indent: int) -> list[str]:
    border = block[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]

    def cells(line: str) -> list[str]:
        # A cell's text may run past its column into the gap before the next (docutils would
        # refuse it; a reader does not mind): the next cell then starts after the next gap of
        # two spaces.
        starts = [spans[0][0]]
        for (_, gap), (start, _) in itertools.pairwise(spans):
            if line[gap:start].strip():
                at = line.find("  ", gap)
                start = len(line) if at < 0 else len(line) - len(line[at:].lstrip())
            starts.append(max(start, starts[-1]))
        return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], len(line)])]

    rows: list[list[str]] = []
    header: list[str] | None = None
    headed = sum(bool(BORDER.match(line)) for line in block) == 3
    for line in block[1:]:
        if BORDER.match(line):
            if headed and header is None:
                header = [" ".join(col) for col in zip(*rows)] if rows else [""] * len(spans)
                rows = []
            continue
        values = cells(line)
        if rows and not values[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], values)]
        else:
            rows.append(values)
    pad = " " * indent

    def row(values: list[str]) -> str:
        return (
            pad
            + "| "
            + " | ".join(_outside_code(v, lambda s: s.replace("|", r"\|")) for v in values)
            + " |"
        )

    table = [row(header or [""] * len(spans)), pad + "|" + "|".join("---" for _ in spans) + "|"]
    return ["", *table, *(row(r) for r in rows), ""]
