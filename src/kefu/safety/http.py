"""FastAPI glue: ``require_permission(perm)`` is a dependency that authenticates ``Authorization: Bearer <key>``.

    @app.post("/v1/chat/completions")
    def chat(body: ChatRequest, principal: Principal = Depends(require_permission("chat"))): ...

Missing or unknown/revoked key -> 401 (with ``WWW-Authenticate: Bearer``); a valid key whose role lacks the
permission -> 403 (audited as ``access.denied``). HTTP never uses the CLI's fresh-install bootstrap rule: a server
without keys refuses everyone (seed one with ``$KEFU_API_KEY`` via ``KeyStore.seed_from_env``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastapi import Header, HTTPException

from kefu.safety.keys import PERMISSIONS, KeyStore, keys_url, PermissionDenied, Principal, require
from kefu.types import KefuError


def bearer_key(authorization: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


_stores: dict[str, KeyStore] = {}


def _store(store_path: str | Path | None) -> KeyStore:
    """One KeyStore per database (the pepper is read once); the default follows $KEFU_HOME and the state backend."""
    key = str(store_path or keys_url())
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = KeyStore.open(store_path or key)
    return store


def require_permission(permission: str, *, store_path: str | Path | None = None) -> Callable[..., Principal]:
    """A FastAPI dependency returning the caller's Principal, or raising 401/403."""
    if permission not in PERMISSIONS:
        raise KefuError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")

    def dependency(authorization: str | None = Header(default=None)) -> Principal:
        principal = _store(store_path).authenticate(bearer_key(authorization))
        if principal is None:
            raise HTTPException(status_code=401, detail="missing, unknown or revoked API key",
                                headers={"WWW-Authenticate": "Bearer"})
        try:
            require(principal, permission)
        except PermissionDenied as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    return dependency
