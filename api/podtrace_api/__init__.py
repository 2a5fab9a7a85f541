"""podtrace API: CRD models (the single source of truth for the CRD schemas)
and the node-config contract shared by the operator and the agent."""

GROUP = "podtrace.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
