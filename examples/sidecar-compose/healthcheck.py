"""The app container's health check: healthy once the app answers on localhost."""

import os
import sys
import urllib.request

address = os.environ.get("APP_ADDRESS", "127.0.0.1:8000")
try:
    urllib.request.urlopen(f"http://{address}/healthz", timeout=2).close()
except OSError:
    sys.exit(1)
