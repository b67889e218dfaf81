"""Runs: one scheduled or manual occurrence of a job (models, the runs API service, the DynamoDB
repository, the S3 objects a run leaves, and how an attempt ends)."""
