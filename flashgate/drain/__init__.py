"""Drain control shared by the admin surface and the consumers: overrides, pause, progress."""
