"""Schemathesis against /openapi.json of a real server (API keys on): every operation, generated valid
and invalid requests, no server errors and every response as the schema documents it.

Bounded for CI: `MAX_EXAMPLES` requests per operation and generation mode. Raise it locally for a
deeper run: `VSOD_FUZZ_EXAMPLES=500 python -m pytest -q tests/test_schema_fuzz.py`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")  # the `test` extra installs it
from hypothesis import HealthCheck, settings  # noqa: E402  (after the skip: schemathesis brings hypothesis)

from tests.servers import Server, running_server  # noqa: E402

MAX_EXAMPLES = int(os.environ.get("VSOD_FUZZ_EXAMPLES", "30"))
KEY = "fuzz-key"
LIMITS = {"max_upload_bytes": 1_000_000, "max_frame_bytes": 500_000, "api_keys": KEY}


@pytest.fixture(scope="module")
def server(model_store_env: dict[str, str]) -> Iterator[Server]:
    with running_server(model_store_env, **LIMITS) as running:
        yield running


# The key through the schema's own security scheme (so generated negative cases that drop it are
# really sent without it); no made-up query parameters (FastAPI ignores unknown ones, as most APIs do).
CONFIG = f"""
[auth.openapi.ApiKey]
api_key = "{KEY}"

[generation]
allow-extra-parameters = false
"""


@pytest.fixture(scope="module")
def api_schema(server: Server):  # type: ignore[no-untyped-def]
    config = schemathesis.config.SchemathesisConfig.from_str(CONFIG)
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    # positive_data_acceptance wants 2xx for any schema-valid body, but "a decodable JPEG" or "a video"
    # cannot be said in OpenAPI: random bytes are rightly refused with a documented 400/413/415.
    case.call_and_validate(timeout=60,
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])


def test_the_fuzzing_got_past_the_key_check(server: Server) -> None:
    """Runs after the fuzzing (file order): every keyed operation was reached past the key check, and
    the generated requests without a key were refused.

    (Not a count of one against the other: schemathesis also checks, per case, that dropping the key
    is refused, so refusals grow with the number of cases, not with a broken key.)"""
    text = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": KEY}).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vsod_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = float(value)
    label = re.compile(r'method="(\w+)",route="([^"]+)",status="(\d+)"')
    seen = [(m.group(1), m.group(2), m.group(3), v) for k, v in counts.items() if (m := label.search(k))]
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    operations = {(method.upper(), path) for path, item in paths.items() if path.startswith("/v1/") for method in item}
    reached = {(method, route) for method, route, status, _ in seen if status not in ("401", "403")}
    refused = sum(value for _, _, status, value in seen if status in ("401", "403"))
    assert refused > 0, counts
    assert operations <= reached, sorted(operations - reached)
    # /readyz answers 503 `loading` to the start-up polls while the model loads (tests/servers.py): an answer, not an error.
    assert not any('status="5' in k for k in counts if 'route="/readyz"' not in k), counts
