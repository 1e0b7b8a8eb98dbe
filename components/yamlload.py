"""The YAML reader of configs and `--set` values: safe tags only, no duplicate keys, aliases bounded."""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["MAX_NODES", "ConfigLoader", "YamlProblem", "load_yaml"]

# A config has a few hundred nodes; an alias bomb (`b: [*a, *a, ...]` nested) has billions once
# expanded, and `apply_overrides`, pydantic and Prefect would all expand it. The composed graph
# keeps aliases shared, so its expanded size is counted there, before anything is built.
MAX_NODES = 100_000

_MERGE = "tag:yaml.org,2002:merge"


class YamlProblem(yaml.YAMLError):
    """Well-formed YAML that a config must not be: `path` (dotted, "" for the top) and what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader (no python tags) that reads 1e-4 (no dot) as a float, as YAML 1.2 and every user
    expect, and refuses duplicate keys and alias expansion past `MAX_NODES`."""

    def get_single_node(self) -> Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_graph(node)
        return node


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with `ConfigLoader`.

    Raises:
        YamlProblem: a duplicate key or an alias expansion past `MAX_NODES`, by dotted path.
        yaml.YAMLError: text that is not YAML, or a tag outside the safe set.
    """
    try:
        return yaml.load(text, Loader=ConfigLoader)  # a SafeLoader
    except RecursionError:
        raise YamlProblem("", "nested too deeply") from None


def _check_graph(root: Node) -> None:
    """Refuse duplicate keys (by path) and a graph whose expanded size passes `MAX_NODES`.

    Iterative, with the expanded size of each node memoised by identity: an alias is the same
    node object as its anchor, so a bomb is measured in as many steps as it has distinct nodes.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, dotted path, children visited?)
    stack: list[tuple[Node, str, bool]] = [(root, "", False)]
    while stack:
        node, path, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child, _ in _children(node, path))
            if total > MAX_NODES:
                raise YamlProblem(
                    path,
                    f"expands to more than {MAX_NODES:,} values through aliases (&anchor / *alias); "
                    "a config needs a few hundred",
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlProblem(path, "an alias refers to a value that contains it (a recursive alias)")
        if isinstance(node, MappingNode):
            _refuse_duplicates(node, path)
        on_path.add(key)
        stack.append((node, path, True))
        # Reversed: children are visited in document order, so a node is named by its first path.
        for child, child_path in reversed(_children(node, path)):
            if id(child) not in sizes:
                stack.append((child, child_path, False))


def _children(node: Node, path: str) -> list[tuple[Node, str]]:
    if isinstance(node, SequenceNode):
        return [(child, _join(path, str(i))) for i, child in enumerate(node.value)]
    if isinstance(node, MappingNode):
        out: list[tuple[Node, str]] = []
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, ScalarNode) else "?"
            out.append((key_node, _join(path, f"{name}(key)")))
            out.append((value_node, _join(path, str(name))))
        return out
    return []


def _refuse_duplicates(node: MappingNode, path: str) -> None:
    # PyYAML keeps the last of two equal keys silently; a config with both is a mistake. Keys a
    # merge (`<<: *defaults`) brings in may be overridden: that is what a merge is for.
    first: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
            continue
        ident = (key_node.tag, key_node.value)
        line = key_node.start_mark.line + 1
        if ident in first:
            raise YamlProblem(
                _join(path, key_node.value),
                f"duplicate key (line {line}; first at line {first[ident]}): a mapping may name a key once",
            )
        first[ident] = line


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part
