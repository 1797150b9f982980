"""Inputs/outputs tables for the module READMEs, in terraform-docs' shape, from the parsed HCL.

The README keeps them between `<!-- BEGIN_TF_DOCS -->` and `<!-- END_TF_DOCS -->`;
test_hcl checks they are current, and `python -m tests.terraform.docs` rewrites them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.terraform import tf

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"


def _type(body: dict[str, Any]) -> str:
    text = str(body.get("type", "any"))
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def _default(body: dict[str, Any]) -> str:
    value = tf.unquote(body["default"])
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def tables(directory: Path) -> str:
    variables = sorted(tf.named_blocks(directory, "variable"), key=lambda item: item[1])
    outputs = sorted(tf.named_blocks(directory, "output"), key=lambda item: item[1])
    lines = ["## Inputs", "", "| Name | Description | Type | Default | Required |", "|------|-------------|------|---------|:--------:|"]
    for _, name, body in variables:
        default = _default(body) if "default" in body else "n/a"
        required = "no" if "default" in body else "yes"
        lines.append(f"| {name} | {_cell(tf.unquote(body.get('description', '')))} | `{_cell(_type(body))}` | {_cell(default)} | {required} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|------|-------------|"]
    for _, name, body in outputs:
        lines.append(f"| {name} | {_cell(tf.unquote(body.get('description', '')))} |")
    return "\n".join(lines)


def section(directory: Path) -> str:
    return f"{BEGIN}\n{tables(directory)}\n{END}"


def current_section(readme: Path) -> str | None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return None
    start = text.index(BEGIN)
    return text[start : text.index(END, start) + len(END)]


def update(readme: Path, directory: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    old = current_section(readme)
    text = text.replace(old, section(directory)) if old else text.rstrip("\n") + "\n\n" + section(directory) + "\n"
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    for folder in [*tf.MODULES, *tf.EXAMPLES]:
        update(folder / "README.md", folder)
        print(folder / "README.md", file=sys.stderr)
