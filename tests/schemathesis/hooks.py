"""schemathesis hooks for latchkey (loaded by run.mjs as SCHEMATHESIS_HOOKS).

Service-token routes get the configured service token; every other route
that declares security gets a live admin session token from run.mjs's token
service (a case may have logged it out, revoked it or deleted the account:
the service then logs in again).
"""

import os
import urllib.request

import schemathesis

SERVICE_ROUTES = ["/v1/ratelimit/check", "/v1/tokens/introspect"]


def _bearer(case, token):
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.auth(refresh_interval=None).apply_to(path=SERVICE_ROUTES)
class ServiceToken:
    def get(self, case, ctx):
        return os.environ["LATCHKEY_SCHEMATHESIS_SERVICE_TOKEN"]

    def set(self, case, data, ctx):
        _bearer(case, data)


@schemathesis.auth(refresh_interval=None).skip_for(path=SERVICE_ROUTES)
class AdminSession:
    def get(self, case, ctx):
        if not case.operation.definition.raw.get("security"):
            return None
        with urllib.request.urlopen(os.environ["LATCHKEY_SCHEMATHESIS_TOKENS"], timeout=60) as answer:
            return answer.read().decode()

    def set(self, case, data, ctx):
        if data:
            _bearer(case, data)
