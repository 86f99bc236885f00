"""Django settings for running BottleCRM (PyPI django-crm 1.35.0) as a local
test server on SQLite. Copied into $BOTTLECRM_DIR by setup.sh.

crm.settings hard-codes PostgreSQL, Redis (Celery broker) and relative log
files; this overrides exactly those. Everything else (auth classes, throttles,
pagination, validation) is the upstream code, so the API behaves as shipped.

Environment (set by setup.sh / start.sh):
  BOTTLECRM_DIR              state folder (required)
  BOTTLECRM_DB               SQLite file (default $BOTTLECRM_DIR/db.sqlite3)
  BOTTLECRM_NO_MIGRATIONS=1  create tables straight from the models
                             (used once by setup.sh with `migrate --run-syncdb`)
"""

import os

from crm.settings import *  # noqa: F401,F403

_DIR = os.environ["BOTTLECRM_DIR"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BOTTLECRM_DB") or os.path.join(_DIR, "db.sqlite3"),
        "OPTIONS": {"timeout": 30},
    }
}

# No Redis: Celery tasks (notification mails etc.) run inline, in memory.
CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = "cache+memory://"
CELERY_TASK_ALWAYS_EAGER = True

# Fast password hashing (the admin password is only used for setup).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

DEBUG = False
MEDIA_ROOT = os.path.join(_DIR, "media")
# An installed copy has no static files; an existing (empty) folder keeps
# whitenoise from warning on every start.
STATIC_ROOT = os.path.join(_DIR, "static")

# Upstream logs to ./server.log and ./security_audit.log in the current
# directory; keep them in the state folder instead.
LOGGING["handlers"]["logfile"]["filename"] = os.path.join(_DIR, "django.log")  # noqa: F405
LOGGING["handlers"]["security_audit"]["filename"] = os.path.join(  # noqa: F405
    _DIR, "security_audit.log"
)

if os.environ.get("BOTTLECRM_NO_MIGRATIONS") == "1":

    class _NoMigrations(dict):
        def __contains__(self, key):
            return True

        def __getitem__(self, key):
            return None

    MIGRATION_MODULES = _NoMigrations()
