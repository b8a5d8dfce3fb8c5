"""Offline algorithms: behaviour cloning, IQL and the Decision Transformer, learning from a recorded dataset on the
shared loop."""
