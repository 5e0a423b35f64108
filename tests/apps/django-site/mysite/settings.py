"""Settings for mysite, read from the environment so the same image runs anywhere."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Set SECRET_KEY with `fly secrets set`; the fallback only lets collectstatic run at build.
SECRET_KEY = os.environ.get("SECRET_KEY", "django-insecure-build-only-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"

APP_NAME = os.environ.get("FLY_APP_NAME")
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
if APP_NAME:
    ALLOWED_HOSTS.append(f"{APP_NAME}.fly.dev")
    CSRF_TRUSTED_ORIGINS = [f"https://{APP_NAME}.fly.dev"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "pages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"

# SQLite on the Fly volume mounted at /data (see fly.toml).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE_PATH", BASE_DIR / "db.sqlite3"),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# collectstatic gathers everything here at build; the platform serves it at /static/
# from [[statics]] in fly.toml, without reaching gunicorn.
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "info").upper()},
}
