"""The platform's Machines REST API, served by the daemon."""
