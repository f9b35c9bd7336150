"""A griffe extension that reads the project's docstrings (written for the terminal and for
``help()``, in a reStructuredText flavour) as Markdown for the documentation site:

- a paragraph ending in ``::`` introduces an indented literal block, which becomes a fenced
  code block (the ``::`` becomes ``:``, or disappears when it stands alone);
- cross-reference roles (``:func:`ssmjax.ops.selective_scan```, ``:class:`~a.B```) become
  inline code naming the object.

Double-backtick literals are already Markdown code spans and stay as they are.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|py:\w+):`~?([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def markdown(text: str) -> str:
    """``text`` with literal blocks fenced and roles turned into code spans."""
    lines = ROLE.sub(lambda m: f"`{m.group(1)}`", text).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            base = _indent(line)
            stripped = line.rstrip()[:-2].rstrip()
            if stripped.strip():
                out.append(stripped + ":")
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block_start = j
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                j += 1
            block = lines[block_start:j]
            while block and not block[-1].strip():
                block.pop()
            if block:
                depth = min(_indent(b) for b in block if b.strip())
                out.append("")
                out.append(" " * base + "```text")
                out.extend(" " * base + b[depth:] if b.strip() else "" for b in block)
                out.append(" " * base + "```")
                out.append("")
                i = j
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


class RstDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
