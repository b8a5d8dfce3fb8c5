"""Offline algorithms: behaviour cloning and IQL, learning from a recorded dataset on the shared loop."""
