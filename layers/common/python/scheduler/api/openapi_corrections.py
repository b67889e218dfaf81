"""What powertools' generated OpenAPI document says that this API never does, put right, so the
document is exact enough to fuzz against (tests/integration/test_openapi_fuzz.py):

- powertools documents a 422 `HTTPValidationError` on every route; the resolver answers every
  invalid request with a 400 `ErrorResponse` instead (a 422 of our own stays);
- a 401 can also come from API Gateway's JWT authorizer, whose body is `{"message": ...}`;
- a request body over 10 MB is refused by API Gateway itself (413);
- API Gateway's stage throttling can answer any route 429 `{"message": "Too Many Requests"}`,
  and a quota's 429 (ours) carries `Retry-After`;
- a 204 has no body, and a redirect only a `Location` header (powertools gives each the
  content of the route's return type)."""

from __future__ import annotations

from typing import Any

GATEWAY_MESSAGE = {
    "title": "GatewayMessage",
    "description": "An answer of API Gateway itself (e.g. its JWT authorizer's 401), which "
    'cannot be customised: {"message": "Unauthorized"}.',
    "type": "object",
    "properties": {"message": {"type": "string", "title": "Message"}},
    "required": ["message"],
}
_REF = "#/components/schemas/"
_POWERTOOLS_VALIDATION = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def correct(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (an OpenAPI document as a dict), corrected in place; returned."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "requestBody" in operation:
                responses["413"] = {
                    "description": "The body is over 10 MB (API Gateway's payload quota)",
                    "content": {"application/json": {"schema": {"$ref": f"{_REF}GatewayMessage"}}},
                }
            throttled = responses.setdefault(
                "429",
                {
                    "description": "API Gateway's stage throttling (ThrottlingRateLimit)",
                    "content": {"application/json": {"schema": {"$ref": f"{_REF}GatewayMessage"}}},
                },
            )
            if _refers_to(throttled, "ErrorResponse"):
                throttled["content"]["application/json"]["schema"] = {
                    "anyOf": [{"$ref": f"{_REF}ErrorResponse"}, {"$ref": f"{_REF}GatewayMessage"}]
                }
                throttled["description"] += "; or API Gateway's stage throttling"
                throttled["headers"] = {
                    "Retry-After": {
                        "description": "Seconds until the quota has room again (a quota's 429)",
                        "schema": {"type": "integer"},
                    }
                }
            for status in list(responses):
                answer = responses[status]
                if _refers_to(answer, "HTTPValidationError"):
                    del responses[status]
                elif str(status) == "204":
                    answer.pop("content", None)
                elif str(status).startswith("3"):
                    answer.pop("content", None)
                    answer.setdefault(
                        "headers",
                        {"Location": {"description": "Where to go", "schema": {"type": "string"}}},
                    )
                elif str(status) == "401" and _refers_to(answer, "ErrorResponse"):
                    answer["content"]["application/json"]["schema"] = {
                        "anyOf": [
                            {"$ref": f"{_REF}ErrorResponse"},
                            {"$ref": f"{_REF}GatewayMessage"},
                        ]
                    }
                    answer["description"] += "; or API Gateway's authorizer refused the token"
    for name in _POWERTOOLS_VALIDATION:
        schemas.pop(name, None)
    schemas["GatewayMessage"] = GATEWAY_MESSAGE
    return document


def _refers_to(answer: dict[str, Any], schema: str) -> bool:
    content = answer.get("content") or {}
    refs = [str((media.get("schema") or {}).get("$ref", "")) for media in content.values()]
    return any(ref.endswith(f"/{schema}") for ref in refs)
