"""Reading a config: YAML (refusing alias bombs before any value is built), validation, and
errors that name each bad key the way the user wrote it and say how to fix it.
:func:`load_config` is the one entry point."""

from __future__ import annotations

import os
import stat
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.exc import ConfigError
from pipeline.flow.config.base import (
    MAX_CONFIG_BYTES,
    MAX_ERROR_LINES,
    MAX_YAML_ALIASES,
    MAX_YAML_NODES,
    brief_repr,
)
from pipeline.flow.config.inputs import implied_kind
from pipeline.flow.config.survey import Config

__all__ = ["config_from_dict", "load_config"]


def config_from_dict(data: dict[str, Any], base_dir: str | os.PathLike = ".") -> Config:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys (inputs, mask, output, ...)")
    try:
        return Config.model_validate(
            {**data, "base_dir": Path(base_dir)}, context={"base_dir": Path(base_dir)}
        )
    except ValidationError as err:
        raise ConfigError(_explain(err, data)) from None


class _AliasBomb(Exception):
    pass


class _CountingLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses more than :data:`MAX_YAML_ALIASES` aliases while it
    composes the document (before any value is built)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _AliasBomb(
                    f"uses more than {MAX_YAML_ALIASES} YAML aliases (limit {MAX_YAML_ALIASES})"
                )
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document once every alias is followed, counted without following them
    (each node once, memoised): stops as soon as the count passes :data:`MAX_YAML_NODES`, and
    refuses a node that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [item for pair in node.value for item in pair]
        return []

    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in children(node))
            if size > MAX_YAML_NODES:
                return size
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _AliasBomb("has a YAML alias inside the node it refers to (a recursive value)")
        on_path.add(key)
        stack.append((node, True))
        for child in children(node):
            if id(child) in on_path:
                raise _AliasBomb(
                    "has a YAML alias inside the node it refers to (a recursive value)"
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs before building any value."""
    loader = _CountingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if loader.aliases:
            size = _expanded_size(node)
            if size > MAX_YAML_NODES:
                raise _AliasBomb(
                    f"uses {loader.aliases} YAML aliases that expand to more than "
                    f"{MAX_YAML_NODES} values (limit {MAX_YAML_NODES})"
                )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file (a regular file of at most 4 MiB)."""
    path = Path(path)
    try:
        # never open a FIFO or a device: reading one blocks for ever or never ends
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file '{path}' is not a regular file: give a YAML file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file '{path}' is {info.st_size} bytes (limit {MAX_CONFIG_BYTES}): "
                "is it the right file?"
            )
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}': {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not text (UTF-8): {err.reason}") from None
    try:
        data = _parse_yaml(text)
    except _AliasBomb as err:
        raise ConfigError(
            f"config file '{path}' {err}: write the values out instead of using so many "
            "&anchors/*aliases"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    except (ValueError, OverflowError) as err:
        # e.g. an integer of more than 4300 digits (Python refuses to parse it)
        raise ConfigError(f"config file '{path}' has a value YAML cannot read: {err}") from None
    try:
        return config_from_dict(data, path.parent.resolve())
    except ConfigError as err:
        raise ConfigError(f"config file '{path}':\n{err}") from None


def _kinds(field: str) -> str:
    """The ``kind`` values of a top-level union section (``mask``, ``cluster``, ...)."""
    info = Config.model_fields.get(field)
    kinds: list[str] = []
    for member in typing.get_args(info.annotation) if info is not None else ():
        kind = getattr(member, "model_fields", {}).get("kind")
        if kind is not None:
            kinds += [repr(k) for k in typing.get_args(kind.annotation)]
    return ", ".join(kinds)


def _key_path(loc: tuple, data: Any) -> str:
    """The key path of an error as the user wrote it: pydantic's ``loc`` without the union tags
    (``mask.circular.radius`` -> ``mask.radius``) and union member labels (``float``, ``str``)."""
    parts: list[str] = []
    node = data
    tagged = None  # the node whose union tag was already skipped
    for part in loc:
        if (
            isinstance(node, dict)
            and node.get("kind", implied_kind(node)) == part
            and tagged is not node
        ):
            # the tag of a discriminated union comes first; in ``cluster: {kind: address,
            # address: ...}`` the tag "address" is also a key, which only the next part can be
            tagged = node
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(f"[{part}]")
            node = node[part]
            continue
        elif not isinstance(node, dict) and isinstance(part, str):
            continue  # a member of a plain union (int | str)
        else:
            node = None
        parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _explain(err: ValidationError, data: Any = None) -> str:
    found: dict[str, list[str]] = {}
    for item in err.errors():
        loc = _key_path(item["loc"], data)
        kind = item["type"]
        msg = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        if kind == "extra_forbidden":
            hint = "unknown key: remove it or check its spelling (see docs/configuration.md)"
        elif kind == "missing":
            hint = "required key is missing: add it"
        elif kind == "union_tag_invalid":
            loc += ".kind"
            tag, expected = item["ctx"]["tag"], item["ctx"]["expected_tags"]
            hint = f"unknown kind {brief_repr(tag)}: use one of {expected}"
        elif kind == "union_tag_not_found":
            loc += ".kind"
            kinds = _kinds(loc.split(".")[0])
            hint = "required key is missing: add it" + (f" (one of {kinds})" if kinds else "")
        elif isinstance(value, dict):
            hint = msg  # a check of a whole section: the message names its keys
        else:
            hint = f"{msg} (got {brief_repr(value)})"
        found.setdefault(loc, [])
        if hint not in found[loc]:
            found[loc].append(hint)
    lines = [f"  {loc}: {'; or '.join(hints)}" for loc, hints in found.items()]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - MAX_ERROR_LINES
        lines = [*lines[:MAX_ERROR_LINES], f"  ... and {more} more keys with errors"]
    return "invalid configuration:\n" + "\n".join(lines)
