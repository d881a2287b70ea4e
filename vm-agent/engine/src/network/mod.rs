//! Networking for single containers: pasta (slirp4netns as fallback), published ports, generated /etc/hosts and /etc/resolv.conf.
