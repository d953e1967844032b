"""The container runtime: the OCI-style spec defaults, the kernel seam (ctypes syscalls) and
the launcher that starts a process inside namespaces. Importing this package is cheap."""
