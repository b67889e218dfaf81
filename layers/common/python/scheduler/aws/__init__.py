"""What every AWS adapter shares: botocore errors as domain errors, DynamoDB item helpers."""
