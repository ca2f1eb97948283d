"""The ``ollama`` package, imported so that a malformed ``$OLLAMA_HOST`` does not break it,
with the pip command named when the extra is missing."""

from __future__ import annotations

import os

try:
    import httpcore  # noqa: F401 - the bounded transport needs it
    import httpx  # noqa: F401

    try:
        import ollama
    except ValueError:
        # ollama builds a default client from $OLLAMA_HOST at import and raises for a
        # malformed one: import it without the variable, so that parse_host() can say what
        # is wrong with it where a host is needed (and an explicit host still works).
        _saved_host = os.environ.pop("OLLAMA_HOST", None)
        if _saved_host is None:
            raise
        try:
            import ollama
        finally:
            os.environ["OLLAMA_HOST"] = _saved_host
except ImportError as _error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "resguard.ollama needs the 'ollama' package: pip install 'resguard[ollama]' "
        "(from a checkout of resguard: pip install -e '.[ollama]')"
    ) from _error

__all__ = ["ollama"]
