"""URL paths below a root path (``uvicorn --root-path``), matched one way everywhere."""

from __future__ import annotations

__all__ = ["below_root"]


def below_root(path: str, root: str | None) -> str:
    """*path* without the *root* it is mounted below, or *path* as it is when it is not
    below *root*: ``/api/readyz`` under ``/api`` is ``/readyz``, ``/api`` itself is ``""``,
    and ``/apiary`` is not below ``/api`` (a prefix of the text is not a parent path)."""
    root = (root or "").rstrip("/")
    if not root:
        return path
    if path == root:
        return ""
    if path.startswith(root + "/"):
        return path[len(root) :]
    return path
