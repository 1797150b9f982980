"""Every resource type, argument, nested block and referenced attribute the modules use
exists in the provider schema, read offline from cdktf's generated provider bindings
(see tests/terraform/schema.py; .ci/run downloads the pinned wheels)."""

from __future__ import annotations

import re

import pytest

from tests import support
from tests.terraform import schema, tf

META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
_REFERENCE = re.compile(r"(?<![\w.])(data\.)?((?:aws|google)_\w+)\.(\w+)\.(\w+)")


@pytest.fixture(scope="module")
def schemas() -> dict[str, schema.ProviderSchema]:
    found = {provider: schema.load(provider) for provider in schema.PACKAGES}
    absent = [schema.PACKAGES[p] for p, s in found.items() if s is None]
    if absent:
        support.missing(f"provider binding wheels {absent} not in {schema.WHEELS} (.ci/run downloads them)")
    return found


def _blocks(directory):
    for kind in ("resource", "data"):
        for path, rtype, name, body in tf.typed_blocks(directory, kind):
            yield kind, rtype, name, body


CASES = [(d, kind, rtype, name) for d in tf.module_dirs() for kind, rtype, name, _ in _blocks(d)]


def _check(body: dict, node: schema.Node, where: str, errors: list[str]) -> None:
    present = set()
    for key, value in body.items():
        if key.startswith("__") or key in META:
            continue
        if key == "dynamic":
            for entry in value:
                for raw, dynamic in entry.items():
                    name = tf.unquote(raw)
                    present.add(name)
                    if name not in node.blocks:
                        errors.append(f"{where}: dynamic {name!r} is not a block here")
                        continue
                    for content in dynamic.get("content", []):
                        _check(content, node.blocks[name], f"{where}.{name}", errors)
            continue
        present.add(key)
        if key in node.blocks:
            for item in value if isinstance(value, list) else [value]:
                if not (isinstance(item, dict) and item.get("__is_block__")):
                    errors.append(f"{where}.{key} is a block but is written as an argument")
                    continue
                _check(item, node.blocks[key], f"{where}.{key}", errors)
        elif key in node.attributes:
            if isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("__is_block__"):
                errors.append(f"{where}.{key} is an argument but is written as a block")
        else:
            errors.append(f"{where}: unknown argument or block {key!r}")
    for name in sorted(node.required - present):
        errors.append(f"{where}: required {name!r} is missing")


@pytest.mark.parametrize("directory,kind,rtype,name", CASES,
                         ids=[f"{d.name}:{k}.{t}.{n}" for d, k, t, n in CASES])
def test_arguments_and_blocks_exist_in_the_provider_schema(schemas, directory, kind, rtype, name):
    provider = rtype.split("_", 1)[0]
    body = next(b for k, t, n, b in _blocks(directory) if (k, t, n) == (kind, rtype, name))
    node = schemas[provider].node(kind, rtype)
    errors: list[str] = []
    _check(body, node, f"{rtype}.{name}", errors)
    assert not errors, f"against {schemas[provider].wheel.name} (provider {schemas[provider].version}):\n" + "\n".join(errors)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("directory", tf.module_dirs(), ids=lambda d: d.name)
def test_referenced_attributes_exist(schemas, directory):
    declared = {(kind, rtype, name) for kind, rtype, name, _ in _blocks(directory)}
    errors, checked = [], 0
    for path in sorted(directory.glob("*.tf")):
        for text in _strings(tf.parse(path)):
            for data, rtype, name, attribute in _REFERENCE.findall(text):
                kind = "data" if data else "resource"
                if (kind, rtype, name) not in declared:
                    errors.append(f"{path.name}: {text[:80]!r} references undeclared {kind} {rtype}.{name}")
                    continue
                checked += 1
                node = schemas[rtype.split("_", 1)[0]].node(kind, rtype)
                if attribute not in node.readable:
                    errors.append(f"{path.name}: {rtype}.{name}.{attribute} is not an attribute of {rtype}")
    assert not errors, "\n".join(errors)
    if directory in tf.MODULES:
        assert checked > 10, f"only {checked} references found: is the pattern still right?"
