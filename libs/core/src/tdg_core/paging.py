"""Page tokens of the List RPCs: an opaque encoding of the last key of the previous page."""

from __future__ import annotations

import base64

from tdg_core.errors import InvalidArgument


def encode_page_token(last_key: str) -> str:
    return base64.urlsafe_b64encode(last_key.encode()).decode()


def decode_page_token(token: str, rpc: str) -> str:
    """The last key, or InvalidArgument on `page_token` for a token `rpc` did not return."""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("page_token", f"not a token returned by {rpc}") from exc


def page_size(requested: int, default: int = 50, maximum: int = 500) -> int:
    """0 means the default; otherwise 1 to `maximum`."""
    if requested == 0:
        return default
    if not 1 <= requested <= maximum:
        raise InvalidArgument("page_size", f"1 to {maximum} (0 means {default})")
    return requested
