"""The live web dashboard the daemon serves on 127.0.0.1 (`taxiway dashboard`)."""
