"""Provider schemas offline, from the generated bindings that cdktf's prebuilt provider
wheels ship (cdktf-cdktf-provider-aws / -google on PyPI), read as source, never imported.

Each resource module has a resource class (a TerraformResource/DataSource subclass) and one
struct class per nested block. Every argument's docstring links the registry page with the
Terraform name as the anchor (`...docs/resources/s3_bucket#bucket_prefix`), says
"<name> block." for blocks, and its annotation names the block's struct class. Arguments
without a default are required. Getters (@property) are the readable attributes.
"""

from __future__ import annotations

import ast
import os
import re
import zipfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.support import REPO

# Pinned in .ci/run, which downloads them (no dependencies) into this folder.
WHEELS = Path(os.environ.get("CLOUDPROF_PROVIDER_WHEELS", REPO / ".venv-terraform" / "provider-wheels"))
PACKAGES = {"aws": "cdktf_cdktf_provider_aws", "google": "cdktf_cdktf_provider_google"}

_PARAM = re.compile(
    r":param (?P<py>\w+): (?P<block>\w+ block\. )?.*?\{@link https://registry\.terraform\.io/providers/"
    r"hashicorp/(?P<provider>[\w-]+)/(?P<version>[\d.]+)/docs/(?:resources|data-sources)/\w+#(?P<tf>\w+) "
)


@dataclass
class Node:
    """The arguments a resource or nested block accepts."""

    attributes: set[str] = field(default_factory=set)
    blocks: dict[str, "Node"] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    readable: set[str] = field(default_factory=set)  # resource level only: attributes other resources can reference


@dataclass(eq=False)
class ProviderSchema:
    provider: str
    wheel: Path
    version: str = ""

    def wheel_zip(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.wheel)

    @cache
    def node(self, kind: str, tf_type: str) -> Node:
        """Schema of resource (kind "resource") or data source (kind "data") `tf_type`, e.g. aws_s3_bucket."""
        prefix = f"{self.provider}_"
        if not tf_type.startswith(prefix):
            raise KeyError(f"{tf_type} is not a {self.provider} type")
        module = ("data_" + tf_type) if kind == "data" else tf_type[len(prefix):]
        name = f"{PACKAGES[self.provider]}/{module}/__init__.py"
        with self.wheel_zip() as zf:
            try:
                source = zf.read(name).decode("utf-8")
            except KeyError:
                raise KeyError(f"{self.wheel.name} has no {kind} {tf_type} ({name})") from None
        if f"# `{module if kind == 'data' else tf_type}`" not in source[:500]:
            raise KeyError(f"{name} does not describe {tf_type}: {source[:200]!r}")
        return _module_schema(source, self)


def _init_of(cls: ast.ClassDef) -> ast.FunctionDef | None:
    for item in cls.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return item
    return None


def _module_schema(source: str, schema: ProviderSchema) -> Node:
    tree = ast.parse(source)
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    built: dict[str, Node] = {}

    def build(cls: ast.ClassDef) -> Node:
        if cls.name in built:
            return built[cls.name]
        node = built[cls.name] = Node()
        init = _init_of(cls)
        if init is None:
            return node
        docs = {}
        for match in _PARAM.finditer(ast.get_docstring(init) or ""):
            docs[match.group("py")] = match
            schema.version = match.group("version")
        args = init.args.kwonlyargs
        for arg, default in zip(args, init.args.kw_defaults):
            match = docs.get(arg.arg)
            if match is None:  # meta-arguments (count, provider, ...) carry no registry link
                continue
            tf_name = match.group("tf")
            if default is None:
                node.required.add(tf_name)
            if match.group("block"):
                annotation = ast.unparse(arg.annotation)
                nested = [n for n in re.findall(r"\b(\w+)\b", annotation) if n in classes and n != cls.name
                          and not n.endswith(("OutputReference", "List", "Map"))]
                node.blocks[tf_name] = build(classes[nested[0]]) if nested else Node()
            else:
                node.attributes.add(tf_name)
        return node

    for cls in classes.values():
        init = _init_of(cls)
        if init is None:
            continue
        bases = " ".join(ast.unparse(b) for b in cls.bases)
        if "TerraformResource" in bases or "TerraformDataSource" in bases:
            root = build(cls)
            for item in cls.body:
                if isinstance(item, ast.FunctionDef) and any(ast.unparse(d) == "builtins.property" for d in item.decorator_list):
                    root.readable.add(item.name.rstrip("_"))
            return root
    raise KeyError("no resource class in module")


def load(provider: str) -> ProviderSchema | None:
    found = sorted(WHEELS.glob(f"{PACKAGES[provider]}-*.whl"))
    return ProviderSchema(provider, found[-1]) if found else None
