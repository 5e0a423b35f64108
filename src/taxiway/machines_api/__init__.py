"""The platform's Machines REST API, served by the daemon over TCP (``/v1/apps/...``).

Shaped after the platform's OpenAPI document (superfly/fly-openapi-sdk,
go/api/openapi.yaml) so flyctl-style clients and scripts written against
https://fly.io/docs/machines/api/ work against a local app. Separate from
`taxiway.api`, which is taxiway's own CLI API on a unix socket.
"""
