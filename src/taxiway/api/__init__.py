"""The daemon's local HTTP API (Machines-API-shaped) on a unix socket, and its client."""
