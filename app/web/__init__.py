"""HTTP: translation between JSON requests and the services."""
