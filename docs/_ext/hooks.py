"""MkDocs hooks: the pages that are generated from the code at every build, never copied by hand.

* ``api/<module>.md``: one API reference page per module of ``pyro_vae`` and ``inference``, as
  found on disk (a new module gets its page on the next build), added to the nav's
  "API reference" section after its hand-written pages.
* In a page's Markdown, these markers are replaced:

  - ``<!-- generated: cli -->``: the command line, from :func:`pyro_vae.cli.parser`: each
    command's usage, its arguments, their defaults and help;
  - ``<!-- generated: spec -->``: the spec's top-level keys and the ``train`` and ``evaluate``
    sections with their types and defaults (:mod:`pyro_vae.spec`);
  - ``<!-- generated: registries -->``: every registry entry, its parameters and defaults
    (as ``pyro-vae datasets`` lists them) and the first sentence of its docstring;
  - ``<!-- generated: captions -->``: each figure's name and caption (``pyro_vae.captions``);
  - ``<!-- generated: readme -->``: the README's first screen, up to its link to these docs.

Everything imported here is torch-free: a build takes seconds.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pyro_vae", "inference")
API_SECTION = "API reference"
ROLE = re.compile(r":(?:py:)?\w+:`~?([^`]+)`")


def modules() -> list[str]:
    """Every module of the two packages, packages first, as dotted names."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if any(part.startswith("_") and part != "__init__" for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append(".".join(parts))
    return sorted(found, key=lambda name: (name.split(".")[0] != "pyro_vae", name))


def api_path(module: str) -> str:
    return f"api/{module}.md"


DIRECTIVE = re.compile(r"^::: *([\w.]+)[ \t]*$", re.M)


def guide_objects(docs_dir: Path) -> dict[str, str]:
    """Object path → the hand-written page that renders it with ``::: path`` (each object is
    rendered once, so that every cross-reference has one target)."""
    found = {}
    for page in sorted(docs_dir.rglob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8")):
            found[match[1]] = page.relative_to(docs_dir).as_posix()
    return found


def reexports(module: str) -> tuple[list[str], dict[str, str]]:
    """For a package whose ``__all__`` re-exports names: (the public names it defines itself,
    re-exported name → where it is defined). ([], {}) for any other module."""
    path = ROOT.joinpath(*module.split("."), "__init__.py")
    if not path.is_file():
        return [], {}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    exported: list[str] = []
    imported: dict[str, str] = {}
    defined: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in node.names:
                imported[name.asname or name.name] = f"{node.module}.{name.name}"
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            exported = list(ast.literal_eval(node.value))
    for node in tree.body:
        names = (
            [node.name]
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            else [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        )
        defined += [n for n in names if not n.startswith("_")]
    moved = {name: origin(*imported[name].rsplit(".", 1)) for name in exported if name in imported}
    return (defined, moved) if moved else ([], {})


def origin(module: str, name: str) -> str:
    """Where ``module.name`` is defined, following ``from X import name`` re-imports."""
    parts = module.split(".")
    path = next(
        (
            p
            for p in (
                ROOT.joinpath(*parts).with_suffix(".py"),
                ROOT.joinpath(*parts, "__init__.py"),
            )
            if p.is_file()
        ),
        None,
    )
    if path is None:
        return f"{module}.{name}"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return origin(node.module, alias.name)
    return f"{module}.{name}"


def module_page(module: str, elsewhere: dict[str, str]) -> str:
    """``::: module``, less the members that a guide page renders (linked instead); a package
    that re-exports names lists them as links to their own modules' pages."""
    moved = sorted(
        name[len(module) + 1 :]
        for name in elsewhere
        if name.startswith(module + ".") and "." not in name[len(module) + 1 :]
    )
    options = ["      show_root_heading: false"]
    intro = []
    if moved:
        filters = ", ".join(f'"!^{re.escape(name)}$"' for name in moved)
        options.append(f'      filters: ["!^_[^_]", "!^__", {filters}]')
        links = ", ".join(f"[`{name}`][{module}.{name}]" for name in moved)
        intro.append(f"Documented on a guide page, with their formulas: {links}.")
    own, exported = reexports(module)
    if exported:
        options.append(f"      members: {json.dumps(own) if own else 'false'}")
        links = ", ".join(f"[`{name}`][{target}]" for name, target in exported.items())
        intro.append(f"Also importable from here (documented in their modules): {links}.")
    lines = [
        f"# `{module}`",
        "",
        *(f"{line}\n" for line in intro),
        f"::: {module}",
        "    options:",
        *options,
    ]
    return "\n".join(lines) + "\n"


def on_config(config: Any, **kwargs: Any) -> Any:
    """The per-module pages appended to the nav's API reference section (a module that a guide
    page renders whole is listed with that page)."""
    elsewhere = guide_objects(Path(config.docs_dir))
    for item in config.nav or []:
        if isinstance(item, dict) and API_SECTION in item:
            item[API_SECTION] = [
                *item[API_SECTION],
                *({module: elsewhere.get(module, api_path(module))} for module in modules()),
            ]
            break
    else:
        raise ValueError(f"mkdocs.yml: the nav has no section {API_SECTION!r}")
    return config


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    elsewhere = guide_objects(Path(config.docs_dir))
    for module in modules():
        if module not in elsewhere:
            files.append(
                File.generated(config, api_path(module), content=module_page(module, elsewhere))
            )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    generators = {
        "cli": cli_reference,
        "spec": spec_reference,
        "registries": registries,
        "captions": captions,
        "readme": readme_first_screen,
    }
    for name, generate in generators.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


# --- the command line ----------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, ``<``/``>`` as entities, one line."""
    text = " ".join(str(text).split())
    return text.replace("|", r"\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: Any) -> str:
    """``text`` as a code span (a pipe inside one does not split a table's cells)."""
    text = str(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _yaml(value: Any) -> str:
    """``value`` as YAML in one line, as a spec would write it."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n...\n").strip()  # a plain scalar's document end


def _argument(action: argparse.Action) -> tuple[str, str, str]:
    """(the argument as typed, its default, its help) for one table row."""
    if action.option_strings:
        value = ""
        if action.nargs != 0:
            value = action.metavar or (
                "{" + ",".join(map(str, action.choices)) + "}"
                if action.choices
                else action.dest.upper()
            )
            if action.nargs in ("+", "*"):
                value = f"{value} ..."
        name = ", ".join(_code(f"{flag} {value}".strip()) for flag in action.option_strings)
    else:
        name = _code(action.metavar or action.dest)
        if action.nargs == "?":
            name += " (optional)"
        elif action.nargs in ("+", "*"):
            name += " ..."
    if action.choices and action.metavar and action.nargs != 0:
        name += " — one of " + ", ".join(_code(c) for c in action.choices)
    default = action.default
    shown = (
        ""
        if default in (None, False, [], argparse.SUPPRESS) or action.nargs == 0
        else _code(default)
    )
    if getattr(action, "required", False) and action.option_strings:
        shown = "required"
    return name, shown, _cell(action.help or "")


def _commands(parser: argparse.ArgumentParser) -> tuple[Any, dict[str, str]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    return sub, helps


def cli_reference() -> str:
    from pyro_vae.cli import parser as make_parser

    parser = make_parser()
    sub, helps = _commands(parser)
    lines = [_cell(parser.description or ""), "", "| command | what it does |", "|---|---|"]
    lines += [
        f"| [`{parser.prog} {name}`](#{parser.prog}-{name}) | {_cell(helps.get(name, ''))} |"
        for name in sub.choices
    ]
    for name, command in sub.choices.items():
        command.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=72)
        usage = command.format_usage().strip()
        lines += [
            "",
            f"## `{parser.prog} {name}` {{#{parser.prog}-{name}}}",
            "",
            _cell(helps.get(name, "")),
            "",
            "```text",
            usage,
            "```",
            "",
        ]
        if command.description:
            lines += [_cell(command.description), ""]
        rows = [
            _argument(action)
            for action in command._actions
            if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        ]
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        lines += [f"| {name} | {default} | {help_} |" for name, default, help_ in rows]
    return "\n".join(lines) + "\n"


# --- the spec and the registries -----------------------------------------------------------------


def _first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph (roles shown as code)."""
    text = " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())
    text = ROLE.sub(r"``\1``", text)
    match = re.search(r"^(.+?\.)(\s|$)", text)
    return match[1] if match else text


def _plain(value: Any) -> Any:
    """A parameter's default as the spec writes it (tuples as lists)."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _type_text(annotation: Any) -> str:
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", repr(annotation))
    )
    return text.replace("typing.", "")


def spec_reference() -> str:
    from pyro_vae.spec import COMPONENTS, DEFAULTS, SECTIONS, Spec

    lines = ["| key | type | default |", "|---|---|---|"]
    for field in dataclasses.fields(Spec):
        if field.name in COMPONENTS:
            default = _code(_yaml(DEFAULTS[field.name]))
            lines.append(
                f"| `{field.name}` | a component: [{field.name} registry]"
                f"(#registry-{field.name if field.name != 'decoder' else 'encoder'}) "
                f"| {default} |"
            )
        elif field.name in SECTIONS:
            lines.append(f"| `{field.name}` | the section below | |")
        else:
            lines.append(
                f"| `{field.name}` | {_code(_type_text(field.type))} | "
                f"{_code(_yaml(_plain(field.default)))} |"
            )
    for name, section in SECTIONS.items():
        lines += [
            "",
            f"### `{name}`",
            "",
            _cell(_first_sentence(section.__doc__))
            + f" (the whole docstring: [`{section.__name__}`]"
            f"[{section.__module__}.{section.__name__}])",
            "",
            "| key | type | default |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{name}.{f.name}` | {_code(_type_text(f.type))} | {_code(_yaml(_plain(f.default)))} |"
            for f in dataclasses.fields(section)
        ]
    return "\n".join(lines) + "\n"


def registries() -> str:
    from pyro_vae.registry import signature_params
    from pyro_vae.spec import COMPONENTS

    lines: list[str] = []
    for kind, registry in COMPONENTS.items():
        if kind == "decoder":
            continue
        title = "encoder, decoder" if kind == "encoder" else kind
        lines += [
            "",
            f"### {title} {{#registry-{kind}}}",
            "",
            f"Base class: [`{registry.base.__name__}`]"
            f"[{registry.base.__module__}.{registry.base.__qualname__}]"
            + (
                f", or a subclass of `{registry.foreign.replace(':', '.')}`"
                if registry.foreign
                else ""
            )
            + f"; entry-point group `{registry.group}`.",
            "",
            "| name | parameters (defaults) | what it is |",
            "|---|---|---|",
        ]
        for name in registry.names():
            entry = registry[name]
            params = ", ".join(
                f"`{k}` (required)"
                if p.default is inspect.Parameter.empty
                else _code(f"{k}: {_yaml(_plain(p.default))}")
                for k, p in signature_params(entry).items()
            )
            path = f"{entry.__module__}.{entry.__qualname__}"
            shown = f"[`{name}`][{path}]" if path.split(".")[0] in PACKAGES else f"`{name}`"
            lines.append(
                f"| {shown} | {_cell(params) or '—'} | {_cell(_first_sentence(entry.__doc__))} |"
            )
    return "\n".join(lines) + "\n"


def captions() -> str:
    from pyro_vae.captions import CAPTIONS

    return "\n".join(f"- **`{name}`**: {_cell(text)}" for name, text in CAPTIONS.items()) + "\n"


# --- the README ----------------------------------------------------------------------------------

LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _link(match: re.Match[str]) -> str:
    bang, text, target = match.groups()
    if re.match(r"^[a-z]+:|^#", target):
        return match[0]
    if target.startswith("docs/"):
        return f"{bang}[{text}]({target[len('docs/') :]})"
    return f"{text} (`{target}` in the repository)"


def readme_first_screen() -> str:
    """The README from below its title to the line that links to these docs (or to its first
    section), links into docs/ made relative to the site and others named as files."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    start = 1 if lines and lines[0].startswith("# ") else 0
    end = next(
        (
            i
            for i in range(start, len(lines))
            if lines[i].startswith("## ") or "make docs" in lines[i]
        ),
        len(lines),
    )
    return LINK.sub(_link, "\n".join(lines[start:end]).strip()) + "\n"
