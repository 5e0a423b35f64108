"""The app's image, from a Docker engine: built from the Dockerfile or taken from
``[build] image``, tagged per release, and files copied out of it.

Everything here talks to the engine through the official ``docker`` SDK, which honours
DOCKER_HOST (so Podman's Docker-compatible socket works as well). It is all synchronous:
callers on an event loop run it in a thread.
"""
