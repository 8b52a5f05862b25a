"""A requests Session that never lets a token follow a redirect to another origin.

requests itself drops only `Authorization` when a redirect changes host, port or scheme. GitLab's
`PRIVATE-TOKEN` and `JOB-TOKEN` are ordinary headers to it, so a 302/307 from the API (a misconfigured
proxy, a moved instance, a hostile server) would hand the token to whatever host the `Location` names.
This module is imported only when a request is about to be sent, so `lepton-ci --help` never loads
requests.
"""

from __future__ import annotations

from typing import Any

import requests

from lepton_ci.forge.http import SECRET_HEADERS


class NoLeakSession(requests.Session):
    """Drops every header in SECRET_HEADERS whenever requests would drop `Authorization`.

    The decision is requests' own `should_strip_auth` (another host, port or scheme; the one exception is
    an http → https upgrade on the default ports of the same host), so the rule is the one users of
    requests already know, applied to every token header instead of one.
    """

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in [h for h in prepared_request.headers if h.lower() in SECRET_HEADERS]:
                del prepared_request.headers[name]
        super().rebuild_auth(prepared_request, response)
