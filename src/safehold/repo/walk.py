"""Walking snapshot trees: the shared traversal behind check, prune, ls, diff and stats."""

from __future__ import annotations

from collections.abc import Iterator

from safehold.repo.repository import Repository
from safehold.repo.tree import Node


def walk_tree(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Yield (path, node) depth-first in name order; paths are `/`-joined display names."""
    for node in repo.load_tree(tree_id):
        path = f"{prefix}/{node.display_name}"
        yield path, node
        if node.type == "dir" and node.subtree:
            yield from walk_tree(repo, node.subtree, path)


def find_node(repo: Repository, tree_id: str, path: str) -> tuple[Node | None, str | None]:
    """The node at `path` inside a tree (None, tree_id for the root itself)."""
    parts = [part for part in path.split("/") if part and part != "."]
    current_tree: str | None = tree_id
    node: Node | None = None
    for part in parts:
        if current_tree is None:
            return None, None
        raw = part.encode("utf-8", "surrogateescape")
        nodes = repo.load_tree(current_tree)
        node = next((n for n in nodes if n.name == raw or n.display_name == part), None)
        if node is None:
            return None, None
        current_tree = node.subtree if node.type == "dir" else None
    return node, current_tree


def collect_used_blobs(repo: Repository, tree_ids: list[str]) -> tuple[set[str], set[str]]:
    """All tree and data blob ids reachable from `tree_ids` (each tree loaded once)."""
    trees: set[str] = set()
    data: set[str] = set()
    stack = list(tree_ids)
    while stack:
        tree_id = stack.pop()
        if tree_id in trees:
            continue
        trees.add(tree_id)
        for node in repo.load_tree(tree_id):
            if node.content:
                data.update(node.content)
            if node.subtree:
                stack.append(node.subtree)
    return trees, data
