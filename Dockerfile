# The podtrace image: operator (`podtrace-operator`, runs as non-root) and node agent
# (`podtrace-agent`, runs as root in a privileged DaemonSet pod). BCC and libseccomp's
# Python bindings come from Debian (`pip install bcc` is an unrelated package); the
# node's kernel headers are mounted at run time. Build: `make image`, or
# `docker build -t podtrace/podtrace:<version> .` where a registry serves the base.
FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv python3-bpfcc python3-seccomp libbpfcc ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /tmp/podtrace-src
# Dependencies first, in their own layer: a change to podtrace's code rebuilds only
# the last layers.
COPY pyproject.toml ./
RUN python3 -m venv /opt/podtrace \
 && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/podtrace/bin/pip install --no-cache-dir -q -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY README.md ./
COPY api api
COPY operator operator
COPY agent agent
COPY scripts/make-venv scripts/make-venv
# A regular (not editable) install, then the source is gone from the image's path.
RUN PYTHON=/usr/bin/python3 PODTRACE_EXTRAS= PODTRACE_EDITABLE=0 \
      scripts/make-venv /opt/podtrace \
 && cd / && rm -rf /tmp/podtrace-src /root/.cache
WORKDIR /
ENV PATH=/opt/podtrace/bin:$PATH PYTHONDONTWRITEBYTECODE=1
# Non-root by default (the operator); the agent's DaemonSet asks for root itself. The
# user has a passwd entry: libraries ask for their user's name (getpass.getuser()).
RUN groupadd --system --gid 65532 podtrace \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin podtrace
USER 65532:65532
ENTRYPOINT []
CMD ["podtrace-operator", "--help"]
