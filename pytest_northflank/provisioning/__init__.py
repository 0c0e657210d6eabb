"""From sandbox options to ready services and back: the backend, the provisioner, warm-ahead,
readiness, the request budget, the shared sandbox, and the texts that explain failures."""
