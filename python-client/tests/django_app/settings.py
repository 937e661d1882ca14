"""A minimal Django project for test_django.py, on the suite's cluster."""
import os

from pg_idempotency.django import Options

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "django_app.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["pg_idempotency.django.IdempotencyMiddleware"]
USE_TZ = True
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["PGDATABASE"],
        "HOST": os.environ["PGHOST"],
        "PORT": os.environ["PGPORT"],
        "USER": os.environ.get("PGUSER", "postgres"),
    }
}
# test_django.py starts a second server with one slot to test the bounded wait.
PG_IDEMPOTENCY_MAX_CONNECTIONS = int(os.environ.get("TEST_MAX_CONNECTIONS", "0")) or None
PG_IDEMPOTENCY_ACQUIRE_TIMEOUT = 0.3
PG_IDEMPOTENCY_ROUTES = {
    # The demo's payments route: scope "payments", idempotency.fingerprint(body), as in C++, Node and ASGI.
    ("POST", "/payments"): Options(scope=lambda req: "payments", fingerprint="json-body"),
    ("POST", "/faithful"): Options(replay_headers=["Set-Cookie", "Location", "Content-Type"]),
    ("POST", "/reject"): Options(),
    ("POST", "/slow"): Options(fingerprint="none"),
}
