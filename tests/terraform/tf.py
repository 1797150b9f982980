"""The Terraform modules as data for tests: parsed HCL (python-hcl2) and the IAM
policy templates rendered exactly as the module's templatefile() renders them."""

from __future__ import annotations

import json
import re
import textwrap
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import hcl2

from tests.support import REPO

TERRAFORM = REPO / "terraform"
AWS = TERRAFORM / "aws"
GCP = TERRAFORM / "gcp"
MODULES = (AWS, GCP)
EXAMPLES = (TERRAFORM / "examples" / "aws-basic", TERRAFORM / "examples" / "gcp-basic")
POLICIES = AWS / "policies"

# ${name} with a plain identifier: the only template syntax the policy templates may use,
# so that substituting strings here is exactly what Terraform's templatefile() does.
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_HEREDOC = re.compile(r"<<(?P<indent>-?)(?P<tag>\w+)\n(?P<body>.*)\n\s*(?P=tag)", re.S)


def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)


def module_dirs() -> list[Path]:
    return sorted({p.parent for p in tf_files()})


@cache
def parse(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return hcl2.load(f)


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ("\"abc\""); expressions come as "${...}"."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        heredoc = _HEREDOC.fullmatch(value[1:-1])
        if heredoc:
            text = heredoc.group("body") + "\n"
            return textwrap.dedent(text) if heredoc.group("indent") else text
        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value


def clean(body: Any) -> Any:
    """A parsed block with string literals unquoted and without python-hcl2's bookkeeping keys."""
    if isinstance(body, dict):
        return {unquote(k): clean(v) for k, v in body.items() if not (isinstance(k, str) and k.startswith("__"))}
    if isinstance(body, list):
        return [clean(v) for v in body]
    return unquote(body)


def comments(body: dict[str, Any]) -> list[str]:
    return [c["value"] for c in body.get("__comments__", [])]


def named_blocks(directory: Path, kind: str) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """(file, name, body) of every `kind "name" {}` block (variable, output, module) in a directory."""
    for path in sorted(directory.glob("*.tf")):
        for entry in parse(path).get(kind, []):
            for name, body in entry.items():
                yield path, unquote(name), body


def typed_blocks(directory: Path, kind: str = "resource") -> Iterator[tuple[Path, str, str, dict[str, Any]]]:
    """(file, type, name, body) of every resource or data block in a directory."""
    for path in sorted(directory.glob("*.tf")):
        for entry in parse(path).get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    yield path, unquote(rtype), unquote(name), body


def resource(directory: Path, rtype: str, name: str) -> dict[str, Any]:
    for _, t, n, body in typed_blocks(directory):
        if (t, n) == (rtype, name):
            return body
    raise KeyError(f"{directory.name}: no resource {rtype}.{name}")


def locals_of(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in parse(path).get("locals", []):
            merged.update({k: v for k, v in block.items() if not k.startswith("__")})
    return merged


def template_names(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {m.group(1).strip() for m in _INTERPOLATION.finditer(text)}


def render_template(path: Path, variables: dict[str, str]) -> str:
    """templatefile() for templates that only interpolate plain variables with string values."""
    text = path.read_text(encoding="utf-8")
    if "%{" in text or "$${" in text:
        raise ValueError(f"{path.name}: template directives are not allowed in policy templates")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if not name.isidentifier():
            raise ValueError(f"{path.name}: ${{{name}}} is an expression, not a plain variable")
        value = variables[name]
        if not isinstance(value, str):
            raise TypeError(f"{path.name}: {name} must be a string")
        return value

    return _INTERPOLATION.sub(substitute, text)


def aws_policy(name: str, **variables: str) -> dict[str, Any]:
    """The S3/SQS/logs policy document the AWS module deploys from policies/<name>.json.tftpl.

    The module appends KMS statements only when kms_key_arn is set and X-Ray
    statements only when tracing is Active; neither names an S3 or SQS action
    (test_iam_policies checks that), so the default-bucket document is this one.
    """
    variables.setdefault("prefix", "")
    return json.loads(render_template(POLICIES / f"{name}.json.tftpl", variables))


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
