"""Who is calling: API keys from the principals file, or JWT bearer tokens.

* ``X-API-Key`` → the principal whose ``api_key_sha256`` matches (principals file).
* ``Authorization: Bearer <api key>`` → the same (what OpenAI-style clients send).
* ``Authorization: Bearer <jwt>`` → HS256 with ``jwt_secret`` or RS256/ES256 with a key from
  ``jwt_jwks_file``; ``exp`` and ``sub`` are required, ``aud``/``iss`` are checked when
  configured. Claims: ``sub``, ``groups`` (list of names), ``clearance`` (a level name).
* ``X-Act-For: <jwt of the end user>`` from an API-key principal with ``can_act_for: true``:
  the request runs as the end user, with the token's groups and the lower of the two
  clearances. Anyone else sending it gets 403.

Each of these headers appears at most once and is never blank: an empty ``X-Act-For`` must not
quietly become "act as yourself" (:func:`credential_headers` answers 400 instead).

A request body can never add groups or clearance: the principal comes only from here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
from pydantic import BaseModel, ConfigDict

from citewell.core.errors import (
    AuthenticationError,
    AuthorizationError,
    CitewellError,
    ConfigurationError,
    UnknownClassificationError,
)
from citewell.core.logging import log_event
from citewell.core.models import ClassificationScheme, Principal
from citewell.core.settings import Settings
from citewell.retrieval.principals import PrincipalDirectory

logger = logging.getLogger(__name__)

# Asymmetric algorithms accepted with JWKS keys. HS* is never tried with a JWKS key (that is the
# classic algorithm-confusion attack: a public key used as an HMAC secret).
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
MAX_TOKEN_CHARS = 8192

# "local": a process started for one principal (``citewell mcp`` on stdio), no credential sent.
AuthMethod = Literal["api_key", "jwt", "local"]

API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
ACT_FOR_HEADER = "x-act-for"
_ACT_FOR_LOOKALIKE = re.compile(r"(x[-_ ]?)?act[-_ ]?(for|as)", re.IGNORECASE)


class CredentialError(AuthenticationError):
    """Missing or invalid credentials; ``reason`` is a short fixed code for metrics and audit."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotPermittedError(AuthorizationError):
    """Valid credentials, forbidden action; ``reason`` is a short fixed code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MalformedCredentialsError(CitewellError):
    """A credential header is blank, repeated or not in a form we accept (400): the request is
    refused before anyone is authenticated. ``reason`` is a short fixed code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CredentialHeaders(BaseModel):
    """The credential headers of one request, each present at most once and never blank."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str | None = None
    bearer: str | None = None
    act_for: str | None = None


def _one(values: Sequence[str], display: str) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise MalformedCredentialsError("repeated", f"send one {display} header, not several")
    value = values[0].strip()
    if not value:
        raise MalformedCredentialsError("blank", f"the {display} header is empty")
    return value


class HeaderSource(Protocol):
    """Starlette's ``Headers``: lower-cased names, every value of a repeated header."""

    def __iter__(self) -> Iterator[str]: ...

    def getlist(self, key: str) -> list[str]: ...


def credential_headers(headers: HeaderSource) -> CredentialHeaders:
    """Parse the credential headers. Raises :class:`MalformedCredentialsError` (400) for a
    blank or repeated header, or a look-alike of ``X-Act-For`` (``X_Act_For``, ``Act-For``)
    that a proxy or client mangled: ignoring it would run the service as itself. Raises
    :class:`CredentialError` (401) for an Authorization scheme other than Bearer."""
    for name in headers:
        if name != ACT_FOR_HEADER and _ACT_FOR_LOOKALIKE.fullmatch(name):
            raise MalformedCredentialsError(
                "act_for_name", f"unrecognised header {name!r}: send X-Act-For"
            )
    api_key = _one(headers.getlist(API_KEY_HEADER), "X-API-Key")
    act_for = _one(headers.getlist(ACT_FOR_HEADER), "X-Act-For")
    authorization = _one(headers.getlist(AUTHORIZATION_HEADER), "Authorization")
    bearer: str | None = None
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise CredentialError("scheme", "only Bearer authorization is accepted")
        bearer = token.strip()
        if not bearer:
            raise MalformedCredentialsError("blank", "the Authorization header has no token")
    return CredentialHeaders(api_key=api_key, bearer=bearer, act_for=act_for)


class AuthContext(BaseModel):
    """The outcome of authentication for one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal: Principal  # whom the request runs as
    method: AuthMethod
    caller: str | None = None  # the service that acted for ``principal``, if any
    # An operator (``operator: true`` in the principals file, API keys only) receives server
    # timings; a request made for someone else (act-for) never does.
    operator: bool = False


@dataclass(frozen=True)
class JwtPolicy:
    """Which bearer tokens are accepted: an HS256 secret and/or a JWKS file of public keys,
    and the audience, issuer and clock leeway they must satisfy."""

    secret: str | None = None
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtPolicy:
        return cls(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks_file=settings.jwt_jwks_file,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )


FileStamp = tuple[int, int, int, int, int]


def file_stamp(path: Path) -> FileStamp:
    """One state of a file, to tell when to read it again: device, inode, size, mtime and
    ctime. The mtime alone misses a file replaced with its old mtime (``rsync -a``, ``cp -p``, a
    symlink switched into a store of fixed-mtime files); the ctime cannot be set back."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


class JwtVerifier:
    """Verifies bearer tokens. The JWKS file is read at start and again when it changes."""

    def __init__(self, scheme: ClassificationScheme, policy: JwtPolicy) -> None:
        self._scheme = scheme
        self._secret = policy.secret
        self._jwks_file = policy.jwks_file
        self._audience = policy.audience
        self._issuer = policy.issuer
        self._leeway_s = policy.leeway_s
        self._lock = threading.Lock()
        self._jwks: list[jwt.PyJWK] | None = None
        self._jwks_stamp: FileStamp | None = None
        if self._jwks_file is not None:
            # Fail fast at startup, as the principals file does; a later broken edit fails the
            # requests that need it (500), never accepts a token it cannot check.
            self._keys(self._jwks_file)

    @property
    def enabled(self) -> bool:
        return self._secret is not None or self._jwks_file is not None

    def _keys(self, path: Path) -> list[jwt.PyJWK]:
        try:
            stamp = file_stamp(path)
        except OSError as exc:
            raise ConfigurationError(f"cannot read JWKS file {path}") from exc
        with self._lock:
            if self._jwks is None or stamp != self._jwks_stamp:
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                    keys = jwt.PyJWKSet.from_dict(data).keys
                except (OSError, ValueError, jwt.PyJWTError) as exc:
                    raise ConfigurationError(f"invalid JWKS file {path}") from exc
                self._jwks = [k for k in keys if k.algorithm_name in ASYMMETRIC_ALGORITHMS]
                self._jwks_stamp = stamp
            return self._jwks

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        alg = header.get("alg")
        if not isinstance(alg, str):
            # A forged header may carry a list or an object here (unhashable: not a set member).
            raise CredentialError("jwt_key", "token signed with an unknown key or algorithm")
        if alg == "HS256" and self._secret is not None:
            return self._secret, "HS256"
        if alg in ASYMMETRIC_ALGORITHMS and self._jwks_file is not None:
            kid = header.get("kid")
            candidates = [k for k in self._keys(self._jwks_file) if k.algorithm_name == alg]
            if kid is not None:
                candidates = [k for k in candidates if k.key_id == kid]
            if len(candidates) == 1:
                return candidates[0].key, str(alg)
        raise CredentialError("jwt_key", "token signed with an unknown key or algorithm")

    def verify(self, token: str) -> Principal:
        """The principal a valid token describes. Raises :class:`CredentialError` otherwise."""
        if not self.enabled:
            raise CredentialError("jwt_disabled", "bearer tokens are not accepted here")
        if len(token) > MAX_TOKEN_CHARS:
            raise CredentialError("jwt_invalid", "invalid bearer token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise CredentialError("jwt_invalid", "invalid bearer token") from exc
        key, alg = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise CredentialError("jwt_expired", "bearer token expired") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise CredentialError("jwt_audience", "token not issued for this service") from exc
        except jwt.PyJWTError as exc:
            raise CredentialError("jwt_invalid", "invalid bearer token") from exc
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub, clearance = claims.get("sub"), claims.get("clearance")
        groups = claims.get("groups", [])
        if not isinstance(sub, str) or not sub:
            raise CredentialError("jwt_claims", "bearer token has no subject")
        if not isinstance(clearance, str):
            raise CredentialError("jwt_claims", "bearer token has no clearance claim")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise CredentialError("jwt_claims", "bearer token groups claim must be a list")
        try:
            level = self._scheme.levels[self._scheme.rank(clearance)]
        except UnknownClassificationError as exc:
            raise CredentialError("jwt_clearance", "bearer token has an unknown clearance") from exc
        return Principal(name=sub, clearance=level, groups=frozenset(g for g in groups if g))


class PrincipalsFile:
    """The principals file, re-read when it changes so keys can be issued or revoked without a
    restart. An edit that breaks the file is logged and the last valid version stays in force;
    a file removed revokes every key (logged) until it is back: nobody is known by a file that
    is not there."""

    def __init__(self, path: Path, scheme: ClassificationScheme) -> None:
        self._path = path
        self._scheme = scheme
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._directory = PrincipalDirectory.load(path, scheme)  # fail fast at startup

    def _stat(self) -> FileStamp | None:
        try:
            return file_stamp(self._path)
        except OSError:  # removed, or its folder unreadable: nobody is known by it
            return None

    def current(self) -> PrincipalDirectory:
        stamp = self._stat()
        if stamp == self._stamp:
            return self._directory
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                if stamp is None:
                    self._directory = PrincipalDirectory({}, self._scheme)
                    log_event(logger, logging.ERROR, "auth.principals_missing")
                    return self._directory
                try:
                    self._directory = PrincipalDirectory.load(self._path, self._scheme)
                    log_event(logger, logging.INFO, "auth.principals_reloaded")
                except ConfigurationError as exc:
                    log_event(
                        logger, logging.ERROR, "auth.principals_reload_failed", error=str(exc)
                    )
            return self._directory


class LocalPrincipal:
    """The principal a local process (``citewell mcp --user NAME`` on stdio) runs as, looked up
    by name in the principals file again for every call, through the same re-read as the API's
    keys: a session kept open for days gets a removed user, a lowered clearance or a removed
    group on its next call, as an HTTP caller does on its next request."""

    def __init__(self, name: str, principals: PrincipalsFile) -> None:
        self.name = name
        self._principals = principals

    def context(self) -> AuthContext:
        """Raises :class:`CredentialError` when ``name`` is no longer in the file."""
        principal = self._principals.current().get(self.name)
        if principal is None:
            raise CredentialError(
                "principal_unknown",
                f"user {self.name!r} is no longer in the principals file: this session may not "
                "search or answer",
            )
        return AuthContext(principal=principal, method="local")


class Authenticator:
    """Resolves request credentials to an :class:`AuthContext`."""

    def __init__(
        self,
        scheme: ClassificationScheme,
        principals: PrincipalsFile | None,
        verifier: JwtVerifier,
    ) -> None:
        self._scheme = scheme
        self._principals = principals
        self._verifier = verifier

    def _directory(self) -> PrincipalDirectory | None:
        return self._principals.current() if self._principals is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        scheme = settings.scheme
        principals = (
            PrincipalsFile(settings.principals_file, scheme)
            if settings.principals_file is not None
            else None
        )
        return cls(scheme, principals, JwtVerifier(scheme, JwtPolicy.from_settings(settings)))

    def authenticate(self, api_key: str | None, bearer: str | None) -> AuthContext:
        """Who sent the request. Raises :class:`CredentialError` (401)."""
        if api_key and bearer:
            raise CredentialError("ambiguous", "send either an API key or a bearer token, not both")
        if api_key:
            principal = self._by_api_key(api_key)
            directory = self._directory()
            operator = directory is not None and directory.is_operator(principal.name)
            return AuthContext(principal=principal, method="api_key", operator=operator)
        if bearer:
            # OpenAI-style clients can only send "Authorization: Bearer <key>": an API key is
            # accepted there too (same constant-time lookup), anything else must be a JWT.
            directory = self._directory()
            by_key = directory.by_api_key(bearer) if directory is not None else None
            if by_key is not None:
                return AuthContext(principal=by_key, method="api_key")
            return AuthContext(principal=self._verifier.verify(bearer), method="jwt")
        raise CredentialError("missing", "authentication required")

    def _by_api_key(self, api_key: str) -> Principal:
        directory = self._directory()
        principal = directory.by_api_key(api_key) if directory is not None else None
        if principal is None:
            raise CredentialError("api_key_invalid", "invalid API key")
        return principal

    def act_for(self, context: AuthContext, token: str) -> AuthContext:
        """Run as the end user of ``token``. Raises :class:`NotPermittedError` (403) unless the
        caller may act for others, :class:`CredentialError` (401) if the token is invalid."""
        caller = context.principal
        # Only principals named in the principals file (API keys) can be trusted services; an
        # identity-provider token cannot grant itself this right.
        directory = self._directory()
        if (
            context.method != "api_key"
            or directory is None
            or not directory.can_act_for(caller.name)
        ):
            raise NotPermittedError("act_for_forbidden", "this principal may not act for others")
        user = self._verifier.verify(token)
        # The service never lends the user more clearance than it holds itself.
        clearance = min(user.clearance, caller.clearance, key=self._scheme.rank)
        effective = Principal(name=user.name, clearance=clearance, groups=user.groups)
        return AuthContext(principal=effective, method=context.method, caller=caller.name)
