//! Reading container logs written by the monitor (k8s-file and json-file).
