"""The edge: taxiway's local Fly Proxy (listeners, handlers, balancing, autostop/autostart)."""
