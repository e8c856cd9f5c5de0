"""API keys and role-based access control.

Keys look like ``kefu_<key_id>_<secret>``. Only ``HMAC-SHA256(pepper, secret)`` is stored (table ``api_keys`` in
``kefu.state.database_url("keys")``: SQLite under ``$KEFU_HOME/keys.db`` by default, the shared PostgreSQL database
with the postgres backend), so a stolen database does not yield usable keys, and a lookup is one primary-key read plus
one HMAC (microseconds), unlike scrypt/PBKDF2 which would cost ~50 ms per request. Keys are 256-bit random, so a fast
hash is safe here (no dictionary to attack). The pepper lives in ``$KEFU_HOME/keys.pepper`` (mode 0600) or
``$KEFU_KEY_PEPPER``. Replicas on several machines sharing one PostgreSQL key store must share the pepper: give them
all the same ``$KEFU_KEY_PEPPER``; a shared store keeps a fingerprint of its pepper (``api_key_settings``) and a
replica with another pepper refuses to open it rather than reject every key.

Bootstrap rule: while the store has never held a key (fresh install), local use is allowed as the OS user with
admin rights, so the first admin key can be created. From the first ``kefu keys create`` on, every state-changing
operation requires ``KEFU_KEY`` with the needed permission; revoking every key does not reopen the store.

Enforcement lives in the Python API, not in the CLI: each state-changing function (``KnowledgeGraph.import_path``,
``data.pipeline.prepare``, ``train.trainer.train``, the registry, exports, retraining, consent registration, key
management) starts with ``authorize(permission)`` — usually through the ``@authorized(permission)`` decorator — which
resolves the caller (``acting_as`` principal of this context, else ``$KEFU_KEY``, else the OS user on a fresh
install), refuses it without the permission, and makes it the actor of every audit entry written during the call.
A service that authenticates its callers per request (HTTP) wraps the work in ``with acting_as(principal):``.
"""

from __future__ import annotations

import base64
import contextvars
import getpass
import hashlib
import hmac
import os
import re
import secrets
import functools
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Column, MetaData, String, Table, func, insert, make_url, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from kefu import state
from kefu.paths import state_path
from kefu.safety import audit
from kefu.state import database
from kefu.types import KefuError

ROLES: tuple[str, ...] = ("admin", "data-engineer", "trainer", "agent", "customer-app", "shop-backend", "auditor")
PERMISSIONS: tuple[str, ...] = ("data:read", "data:write", "model:train", "model:deploy", "chat", "feedback:read",
                                "feedback:write", "audit:read", "keys:admin", "kg:write", "customer:assert")
# Least privilege, and separation of duties: trainers train but do not deploy; auditors read the log but no data.
PERMISSION_MATRIX: dict[str, set[str]] = {
    "admin": set(PERMISSIONS),
    "data-engineer": {"data:read", "data:write", "feedback:read", "kg:write"},
    "trainer": {"data:read", "model:train", "feedback:read"},
    "agent": {"chat", "feedback:read", "feedback:write"},
    "customer-app": {"chat", "feedback:write"},
    # the shop's own server: it has logged its customer in, so it may say who the customer is (customer tokens)
    "shop-backend": {"chat", "feedback:write", "customer:assert"},
    "auditor": {"audit:read", "feedback:read"},
}

KEY_PREFIX = "kefu"
_KEY_RE = re.compile(r"^kefu_([a-z0-9]{12})_([A-Za-z0-9_-]{20,})$")
LOCAL_KEY_ID = "local"


class PermissionDenied(KefuError):
    """The caller has no key, an unknown/revoked key, or a role without the permission."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and name, and its role.

    ``customer_id`` binds a key to one customer (a key shipped inside a customer's app, or a customer token): it
    may act for that customer only. An unbound key names no customer: only a key with ``customer:assert`` (admin,
    shop-backend: the shop's server, which logged its customer in) may say who the customer is, by naming them or by
    minting a customer token (``KeyStore.mint_customer_token``).
    """

    key_id: str
    name: str
    role: str
    customer_id: str | None = None

    @property
    def permissions(self) -> set[str]:
        return PERMISSION_MATRIX.get(self.role, set())

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    @property
    def actor(self) -> str:
        """How this principal appears in the audit log."""
        return self.name if self.key_id == LOCAL_KEY_ID else f"key:{self.key_id}:{self.name}"


def require(principal: Principal | None, permission: str) -> None:
    """Raise PermissionDenied unless ``principal`` holds ``permission``; denials of known keys are audited."""
    if permission not in PERMISSIONS:
        raise KefuError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
    if principal is None:
        raise PermissionDenied(f"permission {permission} needed: no valid API key given (set KEFU_KEY or send "
                               "'Authorization: Bearer <key>')")
    if not principal.can(permission):
        audit.record("access.denied", permission, actor=principal.actor, details={"role": principal.role})
        raise PermissionDenied(f"key {principal.key_id} ({principal.name}) has role {principal.role}, which lacks "
                               f"{permission}; roles with it: "
                               f"{', '.join(r for r in ROLES if permission in PERMISSION_MATRIX[r])}")


_acting_principal: ContextVar[Principal | None] = ContextVar("kefu_acting_principal", default=None)


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """Act as ``principal`` inside this block (this thread/task only): ``authorize`` checks its permissions instead
    of reading ``$KEFU_KEY``, and ``audit.record`` names it as the actor. Servers wrap each request in it."""
    token = _acting_principal.set(principal)
    try:
        with audit.acting(principal.actor):
            yield principal
    finally:
        _acting_principal.reset(token)


def acting_context(principal: Principal) -> contextvars.Context:
    """A copy of the current context in which ``principal`` acts (as inside ``acting_as``): for work that runs in
    steps outside one ``with`` block, such as a streamed HTTP answer (``asyncio.create_task(step, context=...)``)."""
    context = contextvars.copy_context()
    # entered and never exited: the copy is private to the caller and dropped with it
    context.run(lambda: acting_as(principal).__enter__())
    return context


def current_principal() -> Principal | None:
    """The principal set by an enclosing ``acting_as``, if any."""
    return _acting_principal.get()


def _refuse(reason: str, permission: str | None, details: dict[str, Any]) -> PermissionDenied:
    """Audit a refused caller (no key / unknown key: the OS user is all we know) and build the error."""
    audit.record("access.denied", permission or "-", actor=f"user:{getpass.getuser()}",
                 details={"reason": reason, **details})
    return PermissionDenied(reason + (f" (permission {permission} needed)" if permission else ""))


def authorize(permission: str | None = None, *, env: str = "KEFU_KEY") -> Principal:
    """Who is calling, refused unless it holds ``permission``: the principal of an enclosing ``acting_as``, else the
    key in ``$KEFU_KEY`` (an unknown or revoked key is refused, also on a fresh install), else — only while no key
    was ever created in this ``$KEFU_HOME`` (bootstrap rule) — the local OS user as admin.

    Every state-changing API function calls this first (``@authorized``); refusals raise PermissionDenied (a
    KefuError: the CLI prints one line and exits 2) and are audited as ``access.denied``.
    """
    if permission is not None and permission not in PERMISSIONS:
        raise KefuError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")
    principal = _acting_principal.get()
    if principal is None:
        key = os.environ.get(env)
        if key:
            principal = KeyStore.open().authenticate(key) if _present(keys_url()) else None
            if principal is None:
                match = _KEY_RE.match(key.strip())
                raise _refuse(f"${env} holds an unknown or revoked API key", permission,
                              {"key_id": match.group(1) if match else None})
        elif not KeyStore.exists():
            principal = local_principal()
        else:
            raise _refuse(f"this kefu home has API keys: set ${env} to a key"
                          + (f" with {permission}" if permission else ""), None, {"permission": permission})
    if permission:
        require(principal, permission)
    return principal


cli_principal = authorize  # the name CLI commands used before enforcement moved into the API

F = TypeVar("F", bound=Callable[..., Any])


def authorized(permission: str) -> Callable[[F], F]:
    """Decorator for a state-changing API function: ``authorize(permission)`` first, then run the function
    ``acting_as`` that principal, so its audit entries name the key that did it."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with acting_as(authorize(permission)):
                return fn(*args, **kwargs)
        call.permission = permission  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]
    return wrap


# -- customer tokens: how a shop's server says who the customer is ------------------------------------------------
CUSTOMER_TOKEN_PREFIX = "kct1"
CUSTOMER_TOKEN_TTL_S = 3600
CUSTOMER_TOKEN_MIN_TTL_S = 60
CUSTOMER_TOKEN_MAX_TTL_S = 86400
_TOKEN_KEY_LABEL = b"kefu customer token v1"  # the signing key is HMAC(pepper, label): never a key digest's key


class CustomerTokenError(PermissionDenied):
    """A customer token that is malformed, forged, expired, or minted by a key that is revoked or may no longer
    assert customers. ``reason`` says which (for the audit log); ``key_id`` is the minting key named in it, if any."""

    def __init__(self, message: str, *, reason: str, key_id: str | None = None):
        super().__init__(message)
        self.reason, self.key_id = reason, key_id


def is_customer_token(value: str | None) -> bool:
    return bool(value) and value.startswith(CUSTOMER_TOKEN_PREFIX + ".")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_metadata = MetaData()
_keys = Table(
    "api_keys", _metadata,
    Column("key_id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("digest", String, nullable=False),  # hex HMAC-SHA256(pepper, secret)
    Column("created_at", String, nullable=False),
    Column("created_by", String, nullable=False),
    Column("revoked_at", String, nullable=True),
    Column("customer_id", String, nullable=True),
)
_settings = Table(  # facts about the store itself; on a shared database, the pepper's fingerprint
    "api_key_settings", _metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String, nullable=False),
)
_PEPPER_CHECK = "pepper_check"
_PEPPER_CHECK_LABEL = b"kefu pepper check v1"  # the fingerprint is HMAC(pepper, label): it does not reveal the pepper

_prepared: set[str] = set()  # SQLite key files this process has upgraded and made private
_prepared_lock = threading.Lock()


def keys_path() -> Path:
    """The SQLite key file of the default backend (``$KEFU_HOME/keys.db``)."""
    return state_path("keys.db")


def keys_url() -> str:
    """The key store's database in force (``kefu.state.database_url("keys")``)."""
    return state.database_url("keys")


def _url(target: str | Path) -> str:
    """A SQLAlchemy URL for a URL or a SQLite file path."""
    return target if isinstance(target, str) and "://" in target else f"sqlite:///{Path(target).resolve()}"


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def _present(url: str) -> bool:
    """Whether there is a store to ask: a shared database always is; a SQLite file only once created (reading never
    creates one)."""
    file = _sqlite_file(url)
    return file is None or file.exists()


def _engine(url: str) -> Engine:
    engine = database.engine(url, _metadata)
    file = _sqlite_file(url)
    if file is not None:
        with _prepared_lock:
            if url not in _prepared:
                with engine.begin() as conn:  # stores made before keys could be bound to a customer
                    columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(api_keys)")}
                    if "customer_id" not in columns:
                        conn.exec_driver_sql("ALTER TABLE api_keys ADD COLUMN customer_id VARCHAR")
                try:
                    os.chmod(file, 0o600)
                except OSError:
                    pass
                _prepared.add(url)
    return engine


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class KeyStore:
    """The key database. Use ``KeyStore.open()``; all methods are safe to call from several threads."""

    def __init__(self, target: str | Path):
        self.url = _url(target)
        self.path = _sqlite_file(self.url)  # the SQLite file, None for a shared database
        self.engine = _engine(self.url)
        self._pepper = self._load_pepper()
        if self.path is None:
            self._check_pepper()

    @classmethod
    def open(cls, target: str | Path | None = None) -> "KeyStore":
        """The store at ``target`` (a SQLAlchemy URL or a SQLite file); default: the backend's (``keys_url``)."""
        return cls(target or keys_url())

    @staticmethod
    def exists(target: str | Path | None = None) -> bool:
        """True when a key store has ever held a key (the bootstrap rule's test); creates no SQLite file."""
        url = _url(target or keys_url())
        if not _present(url):
            return False
        with _engine(url).connect() as conn:
            return bool(conn.execute(select(func.count()).select_from(_keys)).scalar())

    def _load_pepper(self) -> bytes:
        env = os.environ.get("KEFU_KEY_PEPPER")
        if env:
            return env.encode("utf-8")
        pepper_file = self.path.with_suffix(".pepper") if self.path else state_path("keys.pepper")
        if not pepper_file.exists():
            # Write a private temp file, then hard-link it into place: atomic, and a concurrent creator loses cleanly.
            tmp = pepper_file.with_name(f".{pepper_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(32).encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, pepper_file)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return pepper_file.read_bytes().strip()

    def _check_pepper(self) -> None:
        """A shared store remembers the fingerprint of the first pepper it was opened with; a replica with another
        pepper would reject every key and mint customer tokens no other replica accepts, so it is refused here."""
        fingerprint = hmac.new(self._pepper, _PEPPER_CHECK_LABEL, hashlib.sha256).hexdigest()
        query = select(_settings.c.value).where(_settings.c.name == _PEPPER_CHECK)
        with self.engine.connect() as conn:
            stored = conn.execute(query).scalar()
        if stored is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(_settings).values(name=_PEPPER_CHECK, value=fingerprint))
            except IntegrityError:  # another replica recorded its pepper first
                pass
            with self.engine.connect() as conn:
                stored = conn.execute(query).scalar()
        if not hmac.compare_digest(stored, fingerprint):
            raise KefuError("this process's key pepper ($KEFU_KEY_PEPPER, else $KEFU_HOME/keys.pepper) is not the one "
                            "the shared key store was set up with: give every replica the same $KEFU_KEY_PEPPER")

    def _mac(self, secret: str) -> str:
        return hmac.new(self._pepper, secret.encode("utf-8"), hashlib.sha256).hexdigest()

    def _split(self, key: str) -> tuple[str, str]:
        """(key_id, secret). Keys not in our format (e.g. seeded from the environment) get a derived id."""
        m = _KEY_RE.match(key)
        if m:
            return m.group(1), m.group(2)
        return "env" + self._mac("id:" + key)[:9], key

    @authorized("keys:admin")
    def create(self, role: str, name: str, *, actor: str | None = None,
               customer_id: str | None = None) -> tuple[str, Principal]:
        """A new key for ``role`` (bound to ``customer_id`` when given); returns (plaintext key — shown once, never
        stored — and its Principal)."""
        if role not in ROLES:
            raise KefuError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not name or not name.strip():
            raise KefuError("a key needs a --name saying who or what uses it")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        if customer_id is not None and not customer_id.strip():
            raise KefuError("--customer must name a customer id")
        self._insert(key_id, name.strip(), role, self._mac(secret), actor, customer_id)
        return f"{KEY_PREFIX}_{key_id}_{secret}", Principal(key_id, name.strip(), role, customer_id)

    def _insert(self, key_id: str, name: str, role: str, digest: str, actor: str | None,
                customer_id: str | None = None) -> None:
        actor = actor or audit.default_actor()
        with self.engine.begin() as conn:
            conn.execute(insert(_keys).values(key_id=key_id, name=name, role=role, digest=digest, created_at=_now(),
                                              created_by=actor, revoked_at=None, customer_id=customer_id))
        audit.record("keys.create", key_id, actor=actor,
                     details={"role": role, "name": name, "customer_id": customer_id})

    def seed_from_env(self, var: str = "KEFU_API_KEY", role: str = "customer-app") -> Principal | None:
        """Register the key in ``$var`` (any string of >= 16 characters) with ``role``, once; lets a deployment
        configure a key through its secret store. Returns its Principal, or None when the variable is unset."""
        key = os.environ.get(var)
        if not key:
            return None
        if len(key) < 16:
            raise KefuError(f"${var} is too short to be an API key (need >= 16 characters)")
        if role not in ROLES:
            raise KefuError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        existing = self.authenticate(key)
        if existing is not None:
            return existing
        key_id, secret = self._split(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(_keys).where(_keys.c.key_id == key_id)).first()
        if row is not None:  # revoked (or same id, other secret): never silently resurrect
            raise KefuError(f"${var}: key {key_id} exists but is revoked or does not match; create a new key")
        self._insert(key_id, f"env:{var}", role, self._mac(secret), None)
        return Principal(key_id, f"env:{var}", role)

    def authenticate(self, key: str | None) -> Principal | None:
        """The Principal for a valid, unrevoked key, else None. Constant-time digest comparison."""
        if not key or not isinstance(key, str) or len(key) > 512:
            return None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: cannot be a key we issued
            return None
        key_id, secret = self._split(key.strip())
        with self.engine.connect() as conn:
            row = conn.execute(select(_keys.c.name, _keys.c.role, _keys.c.digest, _keys.c.revoked_at, _keys.c.customer_id)
                               .where(_keys.c.key_id == key_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.digest, self._mac(secret)):
            return None
        return Principal(key_id, row.name, row.role, row.customer_id)

    def _token_mac(self, body: str) -> str:
        key = hmac.new(self._pepper, _TOKEN_KEY_LABEL, hashlib.sha256).digest()
        return _b64(hmac.new(key, body.encode("utf-8"), hashlib.sha256).digest())

    @authorized("customer:assert")
    def mint_customer_token(self, customer_id: str, *, ttl_s: int = CUSTOMER_TOKEN_TTL_S,
                            now: float | None = None) -> tuple[str, int]:
        """A signed, expiring token saying "the caller's key vouches that this is customer ``customer_id``":
        ``kct1.<key id>.<base64url customer id>.<expiry, unix s>.<base64url HMAC-SHA256>``, signed with a key
        derived from the store's pepper. Needs ``customer:assert`` (admin, shop-backend); audited as
        ``customer_token.create``. Returns (token, expiry in unix seconds)."""
        principal = current_principal()
        assert principal is not None  # set by @authorized
        if not isinstance(customer_id, str) or not customer_id.strip() or len(customer_id) > 128:
            raise KefuError("a customer token needs a customer id of 1 to 128 characters")
        try:
            encoded = customer_id.encode("utf-8")
        except UnicodeEncodeError:
            raise KefuError("the customer id is not valid Unicode text") from None
        if not CUSTOMER_TOKEN_MIN_TTL_S <= int(ttl_s) <= CUSTOMER_TOKEN_MAX_TTL_S:
            raise KefuError(f"ttl_s must be {CUSTOMER_TOKEN_MIN_TTL_S}..{CUSTOMER_TOKEN_MAX_TTL_S} seconds")
        expires = int(time.time() if now is None else now) + int(ttl_s)
        body = f"{CUSTOMER_TOKEN_PREFIX}.{principal.key_id}.{_b64(encoded)}.{expires}"
        audit.record("customer_token.create", f"customer:{customer_id}", actor=principal.actor,
                     details={"key_id": principal.key_id, "expires_at": expires, "ttl_s": int(ttl_s)})
        return f"{body}.{self._token_mac(body)}", expires

    def verify_customer_token(self, token: str, *, now: float | None = None, check_key: bool = True) -> Principal:
        """The principal a valid customer token stands for: a ``customer-app`` principal bound to the token's
        customer, under the minting key's id. Raises ``CustomerTokenError`` for a malformed, forged or expired
        token, or (``check_key``) one whose minting key is unknown, revoked or lacks ``customer:assert``."""
        parts = token.strip().split(".") if isinstance(token, str) and len(token) <= 1024 else []
        if len(parts) != 5 or parts[0] != CUSTOMER_TOKEN_PREFIX:
            raise CustomerTokenError("malformed customer token", reason="malformed")
        key_id, customer_b64, expires_text, signature = parts[1:]
        key_id = key_id if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key_id) else None
        body = ".".join(parts[:4])
        if key_id is None or not hmac.compare_digest(signature.encode("ascii", "replace"),
                                                     self._token_mac(body).encode("ascii")):
            raise CustomerTokenError("invalid customer token (bad signature)", reason="bad signature", key_id=key_id)
        try:  # signed by us: these parse unless the signing key leaked
            expires = int(expires_text)
            customer = _unb64(customer_b64).decode("utf-8")
        except ValueError:
            raise CustomerTokenError("malformed customer token", reason="malformed", key_id=key_id) from None
        if expires <= (time.time() if now is None else now):
            raise CustomerTokenError("customer token expired: get a new one from the shop's server",
                                     reason="expired", key_id=key_id)
        name = "local"
        if check_key:
            with self.engine.connect() as conn:
                row = conn.execute(select(_keys.c.name, _keys.c.role, _keys.c.revoked_at)
                                   .where(_keys.c.key_id == key_id)).first()
            if row is None or row.revoked_at is not None:
                raise CustomerTokenError("invalid customer token (its key is revoked or unknown)",
                                         reason="minting key revoked or unknown", key_id=key_id)
            if "customer:assert" not in PERMISSION_MATRIX.get(row.role, set()):
                raise CustomerTokenError("invalid customer token (its key may not assert customers)",
                                         reason="minting key lacks customer:assert", key_id=key_id)
            name = row.name
        return Principal(key_id, f"{name}/customer-token", "customer-app", customer)

    @authorized("keys:admin")
    def revoke(self, key_id: str, *, actor: str | None = None) -> None:
        """Revoke a key at once (kept for the record); unknown ids are an error."""
        with self.engine.begin() as conn:
            row = conn.execute(select(_keys.c.revoked_at).where(_keys.c.key_id == key_id)).first()
            if row is None:
                raise KefuError(f"no key with id {key_id!r} (see `kefu keys list`)")
            if row.revoked_at is None:
                conn.execute(update(_keys).where(_keys.c.key_id == key_id).values(revoked_at=_now()))
        audit.record("keys.revoke", key_id, actor=actor or audit.default_actor(),
                     details={"already_revoked": row.revoked_at is not None})

    def list(self, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Every key's metadata (never digests), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_keys.c.key_id, _keys.c.name, _keys.c.role, _keys.c.customer_id,
                                       _keys.c.created_at, _keys.c.created_by, _keys.c.revoked_at).order_by(_keys.c.created_at)).all()
        out = [dict(row._mapping) for row in rows]
        return out if include_revoked else [r for r in out if r["revoked_at"] is None]


def local_principal() -> Principal:
    """The OS user on a fresh install (bootstrap rule): admin, so the first key can be created."""
    return Principal(LOCAL_KEY_ID, f"user:{getpass.getuser()}", "admin")


def acting_customer(principal: Principal, requested: str | None) -> str | None:
    """The customer a request may act for: a bound key's own customer (naming another is refused), else the
    customer the (trusted, unbound) caller names."""
    if principal.customer_id is None:
        return requested
    if requested not in (None, "", principal.customer_id):
        audit.record("access.denied", f"customer:{requested}", actor=principal.actor,
                     details={"reason": "key bound to another customer"})
        raise PermissionDenied(f"this key acts for customer {principal.customer_id} only")
    return principal.customer_id
