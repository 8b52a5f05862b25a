"""The docker target's router (lepton_ci/deploy/router.py) as a container: start it once, keep it, move its routes.

Why a container, for a local engine too: the deployment must outlive the CI job that made it. A router
process on the runner dies with the job (the reason the docker target exists), while a container of the
serving image (which holds lepton-ci, so the router too: it is standard library only) is kept by the
engine, restarted with it (`unless-stopped`), sits on the Docker host's network beside the servers it
proxies, and works the same whether the engine is this machine's socket or an `ssh://` host.

The routes file lives inside the router container. A route change is one `docker exec` of the image's
Python that writes the file atomically (the router re-reads it when it changes) and waits for the router's
acknowledgement, so when `route()` returns the old server gets no new requests and may be stopped.
"""

from __future__ import annotations

import json
import time
from typing import Any

from lepton_ci.deploy import docker_engine
from lepton_ci.errors import TransientError, UserError

ROUTES = "/tmp/lepton-routes.json"
PORT_FILE = "/tmp/lepton-router.port"
START_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 10.0

# Run inside the router container: write the routes atomically, then wait for the router's ack.
_ROUTE_SCRIPT = """\
import os, sys, time
path, routes, generation, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
with open(path + ".tmp", "w") as f:
    f.write(routes)
os.replace(path + ".tmp", path)
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        with open(path + ".applied") as f:
            if f.read().strip() == generation:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.01)
sys.exit(3)
"""


def is_router(client: Any, state: dict[str, Any] | None, deployment_id: str) -> Any | None:
    """The recorded router container when it is running and labelled as this deployment's router."""
    if not isinstance(state, dict):
        return None
    container = docker_engine.get(client, state.get("id"))
    if container is None or container.status != "running":
        return None
    labels = container.labels or {}
    if labels.get("ai.lepton.role") != "router" or labels.get("ai.lepton.deployment") != deployment_id:
        return None
    return container


def check_name(client: Any, name: str, deployment_id: str) -> Any | None:
    """The container already named `name` when it is this deployment's; refused when another's has it."""
    existing = docker_engine.get(client, name)
    if existing is not None and (existing.labels or {}).get("ai.lepton.deployment") != deployment_id:
        raise UserError(
            f"container name {name} is taken by another deployment on the Docker host: "
            "set deploy.docker.name to a prefix of this deployment's own"
        )
    return existing


def ensure(
    client: Any,
    image: str,
    name: str,
    address: str,
    port: int,
    labels: dict[str, str],
    recorded: dict[str, Any] | None,
) -> dict[str, Any]:
    """The running router, or a new one: on the recorded router's port when there was one (the endpoint
    clients know), else on `port` (0: a free one on the Docker host)."""
    APIError = docker_engine.sdk("docker.errors").APIError  # noqa: N806

    current = is_router(client, recorded, labels["ai.lepton.deployment"])
    if current is not None and recorded is not None:
        return recorded
    if recorded and isinstance(recorded.get("port"), int):
        port = recorded["port"]
    stale = check_name(client, name, labels["ai.lepton.deployment"])  # a stopped router of ours: replace it
    if stale is not None:
        docker_engine.remove(stale, 1)
    command = ["-I", "-m", "lepton_ci.deploy.router", "--host", address, "--port", str(port)]
    command += ["--routes", ROUTES, "--port-file", PORT_FILE]
    try:
        container = client.containers.run(
            image,
            command,
            entrypoint=["python"],
            name=name,
            labels={**labels, "ai.lepton.role": "router"},
            network_mode="host",
            restart_policy={"Name": "unless-stopped"},
            detach=True,
        )
    except APIError as exc:
        raise TransientError(f"the router container {name} did not start: {docker_engine._short(exc)}") from None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead") or container.attrs["State"].get("Restarting"):
            detail = docker_engine.logs_tail(container)
            docker_engine.remove(container, 1)
            raise UserError(f"the router on {address}:{port} (deploy.docker.port) did not start: {detail}")
        text = docker_engine.read_file(container, PORT_FILE)
        if text and text.strip().isdigit():
            return {"id": container.id, "name": name, "host": address, "port": int(text.strip()), "image": image}
        time.sleep(0.1)
    detail = docker_engine.logs_tail(container)
    docker_engine.remove(container, 1)
    raise TransientError(f"the router container {name} did not listen within {START_TIMEOUT_S:g}s: {detail}")


def route(client: Any, state: dict[str, Any], primary: str, canary: str | None = None) -> None:
    """Point the router at `primary` (and `canary` first), and return once it applied the change."""
    container = docker_engine.get(client, state.get("id"))
    if container is None:
        raise TransientError(f"the router container {state.get('name')} is gone")
    generation = str(time.time_ns())
    routes = json.dumps({"generation": int(generation), "primary": primary, "canary": canary})
    cmd = ["python", "-I", "-c", _ROUTE_SCRIPT, ROUTES, routes, generation, str(ACK_TIMEOUT_S)]
    code, output = container.exec_run(cmd)
    if code != 0:
        detail = output.decode(errors="replace").strip()[-300:] if output else f"exit code {code}"
        raise TransientError(f"the router container {state.get('name')} did not apply new routes: {detail}")
    state["generation"] = int(generation)


def stop(client: Any, state: dict[str, Any] | None) -> None:
    if isinstance(state, dict):
        container = docker_engine.get(client, state.get("id"))
        if container is not None:
            docker_engine.remove(container, 5)
