"""Jobs: what users create and change through the API (models, service, DynamoDB repository and
the S3 script store)."""
