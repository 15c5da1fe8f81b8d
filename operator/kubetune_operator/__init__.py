"""kubetune operator: reconciles FineTuneJob resources into Kubernetes Jobs."""
