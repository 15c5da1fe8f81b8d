"""What a run tells others: status reports, MLflow tracking, lineage, versions, the model card."""
