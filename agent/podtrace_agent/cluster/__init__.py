"""The agent's cluster mode (`podtrace-agent run`): pure planning, matching and
aggregation in the middle; Kubernetes watches, status writes, Events and
metrics at the edges."""
