"""The HTTP API as API Gateway runs it: routes from the template, the JWT authorizer, and each
request turned into a payload format 2.0 event for the route's function."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from devstack.auth import JwtAuthorizer, Unauthorized
from devstack.template import Route, Stack


class Invoker(Protocol):
    """Runs a function on an event: `Functions` (in this process) or `FunctionWorkers`."""

    def invoke(self, function: str, event: dict[str, Any]) -> Any: ...


MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload quota
ACCOUNT_ID = "123456789012"
API_ID = "local"

# Content types API Gateway passes as text; any other body reaches the function base64-encoded.
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_TEXT_SUFFIXES = ("+json", "+xml", "x-www-form-urlencoded")


def _is_text(content_type: str | None, body: bytes) -> bool:
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    textual = not kind or kind.startswith(_TEXT_TYPES) or kind.endswith(_TEXT_SUFFIXES)
    if not textual:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def build_event(
    *,
    route: Route,
    path_parameters: Mapping[str, str],
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    protocol: str,
    claims: Mapping[str, str] | None,
    request_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The API Gateway HTTP API payload format 2.0 event (see events/*.json)."""
    split = urlsplit(target)
    raw_path, raw_query = split.path, split.query
    lowered: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        lowered[key] = f"{lowered[key]},{value}" if key in lowered else value
    lowered.setdefault("x-forwarded-for", source_ip)
    lowered.setdefault("x-forwarded-proto", "http")
    lowered["x-amzn-trace-id"] = f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}"
    host = lowered.get("host", "127.0.0.1")
    domain = host.split(":", 1)[0]
    route_key = f"{route.method} {route.path}"

    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = lowered
    if raw_query:
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        event["queryStringParameters"] = query
    context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
    }
    if claims is not None:
        context["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": None}}
    context.update(
        {
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": protocol,
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
    )
    event["requestContext"] = context
    if path_parameters:
        event["pathParameters"] = {key: unquote(value) for key, value in path_parameters.items()}
    if body:
        if _is_text(lowered.get("content-type"), body):
            event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
        else:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        event["isBase64Encoded"] = False
    return event


class _Reply:
    """What goes back to the client."""

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        cookies: list[str] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.cookies = cookies or []

    @classmethod
    def message(cls, status: HTTPStatus, **headers: str) -> _Reply:
        body = json.dumps({"message": status.phrase}, separators=(",", ":")).encode()
        return cls(status.value, body, {"content-type": "application/json", **headers})


def reply_from_result(result: Any) -> _Reply:
    """A function's return value as API Gateway (payload 2.0) turns it into a response."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # No statusCode: API Gateway assumes 200 and sends the value as JSON.
        return _Reply(200, json.dumps(result).encode(), {"content-type": "application/json"})
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode()
    headers = {str(k).lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    if body:  # an empty answer (a 204) says no content type rather than an empty JSON one
        headers.setdefault("content-type", "application/json")
    return _Reply(int(result["statusCode"]), body, headers, list(result.get("cookies") or []))


class ApiGateway:
    """ThreadingHTTPServer on host:port serving the template's HttpApi routes."""

    name = "api"

    def __init__(
        self,
        stack: Stack,
        functions: Invoker,
        *,
        authorizer: JwtAuthorizer,
        host: str,
        port: int,
        documents: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.stack = stack
        self.functions = functions
        self.authorizer = authorizer
        self.host = host
        self.port = port
        # The most specific route wins, as in API Gateway: fewer path variables first.
        self.routes = sorted(stack.routes(), key=lambda route: route.path.count("{"))
        self.documents = dict(documents or {})
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        gateway = self

        class RequestHandler(_RequestHandler):
            api = gateway

        self._server = _Server((self.host, self.port), RequestHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="api-gateway"
        )
        self._thread.start()

    def failure(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive():
            return "the HTTP server thread ended"
        return None

    def stop(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- one request ---------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        source_ip: str,
        protocol: str,
    ) -> tuple[_Reply, str]:
        """The reply, and what served it (for the access log)."""
        path = urlsplit(target).path
        request_id = str(uuid.uuid4())
        if method == "GET" and path in self.documents:
            document = json.dumps(self.documents[path]).encode()
            return _Reply(200, document, {"content-type": "application/json"}), "issuer"
        for route in self.routes:
            parameters = route.match(method, path)
            if parameters is not None:
                break
        else:
            return _Reply.message(HTTPStatus.NOT_FOUND), "-"
        if len(body) > MAX_PAYLOAD_BYTES:
            return _Reply.message(HTTPStatus.REQUEST_ENTITY_TOO_LARGE), route.function
        claims: dict[str, str] | None = None
        if route.authorized:
            authorization = next((v for k, v in headers if k.lower() == "authorization"), None)
            try:
                claims = self.authorizer.authorize(authorization)
            except Unauthorized as refused:
                reply = _Reply.message(
                    HTTPStatus.UNAUTHORIZED, **{"www-authenticate": refused.www_authenticate}
                )
                return reply, f"authorizer: {refused.description}"
        event = build_event(
            route=route,
            path_parameters=parameters,
            method=method,
            target=target,
            headers=headers,
            body=body,
            source_ip=source_ip,
            protocol=protocol,
            claims=claims,
            request_id=request_id,
            now=datetime.now(UTC),
        )
        try:
            result = self.functions.invoke(route.function, event)
            reply = reply_from_result(result)
        except Exception:  # a crashed function is a 500, as on AWS
            traceback.print_exc()
            reply = _Reply.message(HTTPStatus.INTERNAL_SERVER_ERROR)
        reply.headers["apigw-requestid"] = request_id
        return reply, route.function


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    api: ApiGateway
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body go out in two writes; with Nagle on, the body waits for
    # the client's delayed ACK (~40 ms on Linux) on every keep-alive response.
    disable_nagle_algorithm = True
    server_version = "devstack-apigw"

    def _serve(self) -> None:
        started = time.perf_counter()
        try:
            declared = int(self.headers.get("content-length") or 0)
            if declared > MAX_PAYLOAD_BYTES:  # refused unread, like API Gateway
                self._send(_Reply.message(HTTPStatus.REQUEST_ENTITY_TOO_LARGE))
                self.close_connection = True
                return
            body = self._read_body()
        except ValueError:
            self._send(_Reply.message(HTTPStatus.BAD_REQUEST))
            self.close_connection = True
            return
        reply, served_by = self.api.handle(
            self.command,
            self.path,
            list(self.headers.items()),
            body,
            self.client_address[0],
            self.request_version,
        )
        self._send(reply)
        elapsed = (time.perf_counter() - started) * 1000
        sys.stderr.write(
            f"{self.log_date_time_string()} {self.command} {self.path} -> {reply.status} "
            f"({served_by}, {elapsed:.0f} ms)\n"
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def __getattr__(self, name: str) -> Any:
        """Any other method (TRACE, CONNECT, PROPFIND...) is served too: http.server would
        answer 501, API Gateway answers a method no route declares 404 `{"message":"Not
        Found"}` like any unknown route."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length < 0:
            raise ValueError("negative content-length")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        for cookie in reply.cookies:
            self.send_header("set-cookie", cookie)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Quiet: _serve writes one line per request instead."""
