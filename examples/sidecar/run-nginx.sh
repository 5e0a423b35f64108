#!/bin/sh
# nginx can't read $PORT from its config, so write this machine's config, then run nginx in the
# foreground (as the article says: a daemonizing nginx would look like an exited machine).
set -e
dir=$(mktemp -d)
sed -e "s|__PORT__|${PORT:-8080}|" -e "s|__ROOT__|$(pwd)/static|" -e "s|__DIR__|$dir|g" \
    nginx.conf.template > "$dir/nginx.conf"
exec nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
