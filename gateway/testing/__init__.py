"""In-memory fakes of the gateway's own ports, for unit tests of the loop and the uplink (no I/O)."""
