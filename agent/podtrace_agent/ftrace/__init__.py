"""The ftrace backend: the same results as the bcc backend, from tracefs instances."""
