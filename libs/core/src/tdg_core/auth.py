"""Token verification and issue (JWT bearer).

Claims: `sub` is the party id, `org` its organisation (a publisher id), `roles` a list of roles.
HS256 with a shared secret for development; RS256 with a public key or a JWKS URL in production.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from tdg_core.errors import Unauthenticated
from tdg_core.settings import TdgSettings


@dataclass(frozen=True, slots=True)
class Principal:
    party: str
    org: str
    roles: tuple[str, ...]

    def as_policy_input(self) -> dict[str, Any]:
        return {"party": self.party, "org": self.org, "roles": list(self.roles)}


class TokenVerifier:
    """Verifies bearer tokens against the configured key; raises Unauthenticated with a reason."""

    def __init__(self, settings: TdgSettings) -> None:
        self._issuer = settings.auth_issuer
        self._audience = settings.auth_audience
        self._jwks: jwt.PyJWKClient | None = None
        self._key: str | None = None
        self._algorithms: list[str]
        if settings.auth_jwks_url:
            self._jwks = jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True)
            self._algorithms = ["RS256"]
        elif settings.auth_rs256_public_key is not None:
            self._key = settings.auth_rs256_public_key.get_secret_value()
            self._algorithms = ["RS256"]
        elif settings.auth_hs256_secret is not None:
            self._key = settings.auth_hs256_secret.get_secret_value()
            self._algorithms = ["HS256"]
        else:
            raise ValueError(
                "no token key configured: set TDG_AUTH_HS256_SECRET (development), "
                "TDG_AUTH_RS256_PUBLIC_KEY or TDG_AUTH_JWKS_URL"
            )

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "missing authorization metadata: send 'authorization: Bearer <JWT>'"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("malformed authorization metadata: expected 'Bearer <JWT>'")
        try:
            key: Any = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            claims = jwt.decode(
                token.strip(),
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("token signature does not verify") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks required claim '{exc.claim}'") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise Unauthenticated(f"token not issued for tdg: {exc}") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated(f"token key not found: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed token: {exc}") from exc
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("malformed token: claim 'roles' must be a list of strings")
        return Principal(
            party=str(claims["sub"]), org=str(claims.get("org", "")), roles=tuple(roles)
        )


def issue_token(
    settings: TdgSettings,
    party: str,
    org: str,
    roles: list[str],
    ttl_s: int = 3600,
) -> str:
    """A development token signed with the HS256 secret from configuration."""
    if settings.auth_hs256_secret is None:
        raise ValueError("TDG_AUTH_HS256_SECRET is not set (run `tdg dev up` or export it)")
    now = int(time.time())
    claims = {
        "sub": party,
        "org": org,
        "roles": roles,
        "iss": settings.auth_issuer,
        "aud": settings.auth_audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, settings.auth_hs256_secret.get_secret_value(), algorithm="HS256")
