"""The HTTP API: one powertools router per Lambda function, the shared resolver and handler, the
error table and the OpenAPI document."""
