# The podtrace image (operator and agent), built from Debian packages: BCC and
# libseccomp's Python bindings come from Debian (`pip install bcc` is an
# unrelated package). Kernel headers are mounted from the node at run time.
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip python3-bpfcc python3-seccomp libbpfcc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY operator operator
COPY agent agent
COPY scripts/make-venv scripts/make-venv
RUN PYTHON=/usr/bin/python3 PODTRACE_EXTRAS= scripts/make-venv /opt/podtrace
ENV PATH=/opt/podtrace/bin:$PATH
USER 0
ENTRYPOINT []
