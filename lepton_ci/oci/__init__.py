"""OCI distribution: the client the `oci://` registry and the image builder share."""
