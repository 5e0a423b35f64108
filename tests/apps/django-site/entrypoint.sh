#!/bin/sh
# Runs before every command of the image: the web and cron processes, the release
# command and consoles.
set -e

# The SQLite file lives on the volume mounted at /data, but only the web machines have
# that volume: the release command's machine has none. Make the folder so SQLite can open
# its file wherever this runs, and migrate the volume's database before the web server
# starts (the release command's migration only sees a throwaway copy).
mkdir -p "$(dirname "${DATABASE_PATH:-/data/db.sqlite3}")"
if [ "$1" = "gunicorn" ]; then
    python manage.py migrate --noinput
fi

exec "$@"
