"""Shared test set-up. Its folder is on sys.path, so `cli_runner` is importable everywhere.

Every app a test starts runs on the process driver unless the test names another with
`--driver`: what `auto` picks depends on the host (root, IPv4 forwarding, iptables), and
the suite must pass the same on any host. Tests of the namespace driver ask for it.
"""

import os

os.environ["TAXIWAY_DRIVER"] = "process"
