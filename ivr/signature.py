"""X-Twilio-Signature checks for every webhook.

Twilio signs the URL it requested plus the sorted POST parameters with the account's
auth token. Behind a proxy the URL we see is not the one Twilio used, so the candidate
URLs are: ``GRIDLINE_PUBLIC_URL`` + path and query (what we told Twilio), and the URL
rebuilt from ``X-Forwarded-Proto``/``X-Forwarded-Host``/``Host`` (an operator who pointed
the number at another host name). Either must verify with the token.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)

# Without a Twilio auth token the hotline still answers the local simulator, which signs
# with this well-known key. It authenticates nothing: never expose such a server.
SIMULATOR_TOKEN = "gridline-simulator-not-secret"


def effective_token(auth_token: str) -> str:
    return auth_token or SIMULATOR_TOKEN


def candidate_urls(request: web.Request, public_url: str) -> list[str]:
    urls = []
    if public_url:
        base = urlsplit(public_url.rstrip("/"))
        urls.append(f"{base.scheme}://{base.netloc}{base.path}{request.path_qs}")
    proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    rebuilt = f"{proto}://{host}{request.path_qs}"
    if rebuilt not in urls:
        urls.append(rebuilt)
    return urls


def is_valid(request: web.Request, form: MultiDictProxy, auth_token: str, public_url: str) -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = RequestValidator(effective_token(auth_token))
    params: dict[str, list[str] | str] = {}
    for key in form:
        values = form.getall(key)
        params[key] = values if len(values) > 1 else values[0]
    return any(validator.validate(url, params, signature) for url in candidate_urls(request, public_url))
