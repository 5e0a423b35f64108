"""The private network every taxiway app on this host shares, as one Fly organisation's.

Each daemon publishes its app's machines to a host-wide directory (`registry`); a DNS
server (`dns_server`, a child process of each daemon) answers `.internal` and `.flycast`
names from it (`dns_answers`) and forwards every other name to the host's resolvers.
"""
