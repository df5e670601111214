"""YAML files given to the CLI: read safely, and typed access whose every error names the file and
the key (dataset files, agreement conditions files)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml

INT32_MAX = 2**31 - 1
V = TypeVar("V")


class YamlFileError(ValueError):
    """A malformed file; the message names the file and the key."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key written twice (plain YAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def read_yaml(path: Path) -> object:
    """The parsed document (plain Python values)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlFileError(path, "", f"cannot read the file: {exc}") from exc
    try:
        return yaml.load(
            text, Loader=_UniqueKeyLoader
        )  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise YamlFileError(path, "", f"not valid YAML: {exc}") from exc


class YamlDoc:
    """Typed access to the parsed file, each error naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> YamlFileError:
        return YamlFileError(self.path, key, problem)

    def mapping(self, value: object, key: str, known: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a mapping of keys to values")
        for k in value:
            if known is not None and k not in known:
                where = f"{key}.{k}" if key else str(k)
                raise self.fail(where, f"unknown key; expected one of {', '.join(known)}")
        return value

    def text(self, value: object, key: str) -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            # YAML reads 69123 as a number and 01 as 1: codes must be quoted to keep their digits.
            raise self.fail(key, f"must be text, got {value!r}; put it in quotes")
        return value

    def texts(self, value: object, key: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "must be a list")
        return [self.text(v, f"{key}[{i}]") for i, v in enumerate(value)]

    def integer(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, got {value!r}")
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise self.fail(key, f"{value} is out of range")
        return value

    def number(self, value: object, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        return float(value)

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def choice(self, value: object, key: str, names: dict[str, V]) -> V:
        text = self.text(value, key).strip().lower()
        if text not in names:
            raise self.fail(key, f"unknown value {value!r}; one of {', '.join(names)}")
        return names[text]
