"""Sign requests the way Twilio signs its webhooks (``X-Twilio-Signature``).

Algorithm (https://www.twilio.com/docs/usage/webhooks/webhooks-security): take the full
URL Twilio requested (scheme, host, port if any, path, query string); for a
form-encoded POST append every parameter name followed by its value, names sorted
(several values of one name sorted too); HMAC-SHA1 with the auth token as key; base64.
JSON bodies are not part of the signed string: Twilio adds ``bodySHA256=<hex sha256 of
the body>`` to the query string instead.

    signature = sign_twilio_request(token, "https://gl.example/ivr/voice", params)
    await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, object] | Iterable[tuple[str, object]] | None


def _pairs(params: Params) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        if isinstance(value, list | tuple):
            pairs.extend((str(key), str(v)) for v in value)
        else:
            pairs.append((str(key), str(value)))
    return pairs


def signing_string(url: str, params: Params = None) -> str:
    """The string Twilio feeds to HMAC: URL + sorted name/value concatenations."""
    by_name: dict[str, list[str]] = {}
    for key, value in _pairs(params):
        by_name.setdefault(key, []).append(value)
    out = url
    for key in sorted(by_name):
        for value in sorted(by_name[key]):
            out += key + value
    return out


def sign_twilio_request(
    auth_token: str, url: str, params: Params = None, *, algorithm: str = "HMAC_SHA1"
) -> str:
    """The ``X-Twilio-Signature`` value for a request to ``url`` with form ``params``.

    ``params`` is a mapping (list values = repeated names) or a list of pairs; pass
    None for GET requests (their parameters are already in the URL's query string).
    """
    digest = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}[algorithm.upper()]
    mac = hmac.new(auth_token.encode(), signing_string(url, params).encode(), digest)
    return base64.b64encode(mac.digest()).decode()


def sign_twilio_json_request(auth_token: str, url: str, body: bytes | str) -> tuple[str, str]:
    """For JSON bodies: returns ``(url_with_bodySHA256, signature)``."""
    raw = body.encode() if isinstance(body, str) else body
    parts = urlsplit(url)
    extra = urlencode({"bodySHA256": hashlib.sha256(raw).hexdigest()})
    query = f"{parts.query}&{extra}" if parts.query else extra
    signed_url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return signed_url, sign_twilio_request(auth_token, signed_url)


def signed_headers(auth_token: str, url: str, params: Params = None) -> dict[str, str]:
    """Headers Twilio sends with a form-encoded webhook, signature included."""
    return {
        SIGNATURE_HEADER: sign_twilio_request(auth_token, url, params),
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
    }
