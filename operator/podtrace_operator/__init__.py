"""podtrace operator: kopf handlers (thin) over a pure compile step."""
