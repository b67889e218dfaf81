"""What `sam local invoke` / `sam local start-api` need to run the functions against a running
local stack (README, "sam local"):

- `.local/sam-env.json`, an `--env-vars` file: each function's environment exactly as the local
  stack gives it (the local tables, queues, bucket, secret), and AWS_ENDPOINT_URL, the endpoint
  at which SAM's containers reach the stack's moto;
- that endpoint. SAM runs each function in a container on Docker's default bridge (it reaches
  the runtime emulator through a port published there; it cannot use the host's network), and
  moto listens on 127.0.0.1 only, so when the bridge exists (a machine with Docker) the stack
  relays the bridge's own address, on moto's port, to moto. The bridge is a network of this
  machine: nothing outside it can connect. Without Docker there is no bridge and no relay; the
  file then names moto's loopback endpoint and `make run` is unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import struct
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import boto3

from devstack.template import Stack

ENV_FILE = "sam-env.json"
BRIDGE = "docker0"
_SIOCGIFADDR = 0x8915
_CHUNK = 65536


def bridge_address(interface: str = BRIDGE) -> str | None:
    """The IPv4 address of Docker's default bridge on this machine, None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        try:
            answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError:
            return None
    return socket.inet_ntoa(answer[20:24])


def container_endpoint(aws_endpoint: str, bridge: str | None) -> str:
    """Where a container on the bridge reaches moto: the bridge's address on moto's port."""
    if bridge is None:
        return aws_endpoint
    return f"http://{bridge}:{urlsplit(aws_endpoint).port}"


def default_network() -> dict[str, str]:
    """moto's default VPC (each region has one, as a new AWS account does): its default
    subnets and security group, for a RunTask from SAM's container."""
    ec2 = boto3.client("ec2")
    subnets = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])
    vpc = subnets["Subnets"][0]["VpcId"]
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )
    return {
        "SUBNETS": ",".join(subnet["SubnetId"] for subnet in subnets["Subnets"][:2]),
        "SECURITY_GROUPS": groups["SecurityGroups"][0]["GroupId"],
    }


def write_env_file(state_dir: Path, stack: Stack, endpoint: str) -> Path:
    """`--env-vars` for sam local: {function: its environment}, AWS_ENDPOINT_URL included."""
    variables = {}
    for function in stack.functions:
        try:
            environment = stack.environment(function)
        except (KeyError, ValueError, TypeError):
            continue  # the local stack says so when it starts
        # The local dispatch backends live in the stack's process, not in the layer that SAM's
        # containers load: there the executor dispatches as the template says (ECS RunTask,
        # which moto records; no runner starts).
        if "DISPATCH_BACKEND" in environment:
            template = stack.environment(function, local=False)
            environment["DISPATCH_BACKEND"] = template["DISPATCH_BACKEND"]
            if not environment.get("SUBNETS"):  # RunTask's awsvpc needs a network
                environment |= default_network()
        variables[function] = environment | {"AWS_ENDPOINT_URL": endpoint}
    path = state_dir / ENV_FILE
    path.write_text(json.dumps(variables, indent=2, sort_keys=True) + "\n")
    return path


class Relay:
    """A TCP relay from `listen` to `target` (host, port): one thread per connection, each way.
    A Service of the local stack: started with it, stopped with it."""

    name = "sam-local-relay"

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self._listen = listen
        self._target = target
        self._server: socket.socket | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        server = socket.create_server(self._listen, reuse_port=False)
        server.settimeout(0.5)
        self._server = server
        threading.Thread(target=self._accept, name=self.name, daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()

    def failure(self) -> str | None:
        return None

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=10)
        except OSError as error:
            print(f"devstack: {self.name}: {error}", file=sys.stderr)
            client.close()
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        back.start()
        _pipe(client, upstream)
        back.join()
        client.close()
        upstream.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def relay_for(aws_endpoint: str, bridge: str | None) -> Relay | None:
    """The relay from the bridge's address to moto, when there is a bridge."""
    if bridge is None:
        return None
    target = urlsplit(aws_endpoint)
    if target.hostname is None or target.port is None:
        return None
    return Relay((bridge, target.port), (target.hostname, target.port))
