"""podtrace node agent: discovery, cgroup tracking, BPF/ftrace backends, CRI enrichment."""
