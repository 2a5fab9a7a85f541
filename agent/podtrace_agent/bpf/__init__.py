"""The bcc backend: BPF C sources (events.h shared with the ctypes mirror in
wire.py), the BTF offset reader and the loader (BccBackend)."""
