//! Named volumes: `<root>/volumes/<name>/_data`, and the `-v`/`--mount`/`--tmpfs` flags as OCI mounts.
