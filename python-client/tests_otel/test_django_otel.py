"""The Django middleware's OpenTelemetry spans, link and metrics: the same
payment_scenario.run as the ASGI middleware's, on a Django project configured
in this process (settings.configure) and served by wsgiref's threaded server,
with PG_IDEMPOTENCY_TELEMETRY handing it the SDK's in-memory exporter and
reader. Skipped without the SDK or Django."""
from __future__ import annotations

import json
import os
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("django")
from django.conf import settings  # noqa: E402

import payment_scenario  # noqa: E402

DB = "pg_idempotency_django_otel"
telemetry = payment_scenario.InMemoryTelemetry()


def pay(request):
    from django.http import HttpResponse

    payment_scenario.hold(request.headers.get("Idempotency-Key", ""))
    body = json.loads(request.body)
    return HttpResponse(json.dumps({"id": 7, **body}), status=201, content_type="application/json")


urlpatterns: list = []


class _ThreadedServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def base():
    payment_scenario.fresh_database(DB)
    from pg_idempotency.django import Options

    settings.configure(
        DEBUG=False, SECRET_KEY="test-only", ALLOWED_HOSTS=["127.0.0.1"], ROOT_URLCONF=__name__, USE_TZ=True,
        INSTALLED_APPS=[], MIDDLEWARE=["pg_idempotency.django.IdempotencyMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": DB,
                               "HOST": os.environ.get("PGHOST", ""), "PORT": os.environ.get("PGPORT", ""),
                               "USER": os.environ.get("PGUSER", "postgres")}},
        PG_IDEMPOTENCY_ROUTES={("POST", "/pay"): Options(scope=lambda r: "otel")},
        PG_IDEMPOTENCY_TELEMETRY=telemetry.telemetry,
    )
    import django
    from django.core.wsgi import get_wsgi_application
    from django.urls import path

    django.setup()
    urlpatterns.append(path("pay", pay))
    server = make_server("127.0.0.1", 0, get_wsgi_application(), server_class=_ThreadedServer,
                         handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_claimed_replay_in_progress_mismatch_link_and_metrics(base):
    payment_scenario.run(base, DB, telemetry.exporter, telemetry.reader)


def test_telemetry_off_by_setting(base):
    from django.test import override_settings

    from pg_idempotency.django import IdempotencyMiddleware

    assert IdempotencyMiddleware(lambda r: None).telemetry is not None
    with override_settings(PG_IDEMPOTENCY_TELEMETRY=False):
        assert IdempotencyMiddleware(lambda r: None).telemetry is None
