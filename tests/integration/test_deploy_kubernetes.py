"""The kubernetes target through the real CLI: a blessed version of a toy project rendered for GitOps,
refused one-line on a bad kube context with nothing sent to the cluster (real kubectl, and a recording
stand-in API server on loopback), and the apply path's kubectl sequence (a fake kubectl on PATH, since
no API server can run here): server-side dry run, apply, rollout status, status, stop, and the previous
version's manifests applied again when a rollout fails."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.e2e.helpers import assert_one_line_error, cli, make_project
from tests.support.keys import PRIVATE_PEM

KEY = {"LEPTON_CI_SIGNING_KEY": PRIVATE_PEM}
IMAGE = "ghcr.io/team/toy-serve@sha256:" + "cd" * 32


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("kubectl is missing (install the Kubernetes client)")
    pytest.skip("kubectl is missing")


def _config(deploy: dict) -> str:
    from tests.e2e.helpers import CONFIG

    return CONFIG + yaml.safe_dump({"deploy": deploy}, sort_keys=False)


def _tagged(root: Path, deploy: dict) -> Path:
    make_project(root, _config(deploy))
    for step in ("train", "gate", "tag"):
        r = cli(step, cwd=root, env=KEY, timeout=180)
        assert r.code == 0, (step, r)
    return root


def _set_deploy(root: Path, deploy: dict) -> None:
    (root / "lepton.yml").write_text(_config(deploy).format(python=sys.executable))


def _production(root: Path) -> int | None:
    """The version `production` points at, or None when the alias does not exist."""
    r = cli("registry", "show", "production", "--json", cwd=root)
    return json.loads(r.out)["version"] if r.code == 0 else None


class Recorder(BaseHTTPRequestHandler):
    """A stand-in Kubernetes API server that refuses everything (403) and records every request."""

    seen: list[tuple[str, str]]

    def _refuse(self) -> None:
        self.seen.append((self.command, self.path))
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                           "message": "forbidden by the stand-in", "code": 403}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def api_server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    handler = type("H", (Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "staging",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "stand-in-token"}}],
        "contexts": [{"name": "staging", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def test_render_only_writes_manifests_and_records_rendered(tmp_path: Path) -> None:
    root = _tagged(tmp_path / "toy", {"target": "kubernetes", "image": IMAGE,
                                      "kubernetes": {"render_only": "deploy/k8s", "namespace": "ml"}})
    r = cli("deploy", cwd=root, env=KEY)
    assert r.code == 0, r
    assert "toy v1 on kubernetes: rendered at http://toy.ml.svc.cluster.local:8080" in r.out
    out = root / "deploy" / "k8s"
    assert sorted(p.name for p in out.iterdir()) == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    assert dep["metadata"]["namespace"] == "ml"
    record = json.loads((root / ".lepton" / "deployment.json").read_text())
    assert record["status"] == "rendered" and record["target"] == "kubernetes" and record["image"] == IMAGE
    assert record["state"]["manifest_dir"] == str(out)
    assert _production(root) is None  # nothing runs yet: the alias is not moved
    # status leaves a rendered record alone; stop says where the manifests are owned
    assert cli("deploy", "status", cwd=root).code == 1  # not "healthy": nothing was checked
    assert_one_line_error(cli("deploy", "stop", cwd=root), 2, "GitOps")

    # --render-only DIR on the command line, with KServe and a canary
    _set_deploy(root, {"target": "kubernetes", "image": IMAGE,
                       "kubernetes": {"kserve": True, "canary_traffic_percent": 10}})
    r = cli("deploy", "--render-only", str(tmp_path / "gitops"), cwd=root, env=KEY)
    assert r.code == 0, r
    isvc = yaml.safe_load((tmp_path / "gitops" / "inferenceservice.yaml").read_text())
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    # --render-only with no DIR and no directory configured: manifests/ beside deployment.json
    r = cli("deploy", "--render-only", cwd=root, env=KEY)
    assert r.code == 0, r
    assert (root / ".lepton" / "manifests" / "inferenceservice.yaml").is_file()


def test_missing_image_and_unpinned_image_are_one_line_errors(tmp_path: Path) -> None:
    root = _tagged(tmp_path / "toy", {"target": "kubernetes", "kubernetes": {"render_only": True}})
    assert_one_line_error(cli("deploy", cwd=root, env=KEY), 2, "deploy.image")
    _set_deploy(root, {"target": "kubernetes", "image": "ghcr.io/team/toy:latest", "kubernetes": {"render_only": True}})
    assert_one_line_error(cli("deploy", cwd=root, env=KEY), 2, "deploy.image", "pinned by digest")
    _set_deploy(root, {"target": "local"})
    assert_one_line_error(cli("deploy", "--render-only", cwd=root, env=KEY), 2, "--render-only", "kubernetes")
    assert not (root / ".lepton" / "deployment.json").exists()


def test_bad_kube_context_is_one_line_and_nothing_is_applied(tmp_path: Path, api_server) -> None:
    kubectl()
    server, seen = api_server
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server)
    env = {**KEY, "KUBECONFIG": str(kubeconfig)}
    root = _tagged(tmp_path / "toy", {"target": "kubernetes", "image": IMAGE, "kubernetes": {"context": "prod"}})
    r = cli("deploy", cwd=root, env=env)
    assert_one_line_error(r, 2, "kube context 'prod'", "deploy.kubernetes.context", str(kubeconfig))
    # nothing was applied: no request that changes anything reached the cluster (this kubectl build may ask
    # the current context's server for its version before choosing how to run, hence no `seen == []`)
    assert all(method == "GET" and not path.startswith("/api") for method, path in seen), seen
    # no context at all: refused, pointing at render_only
    _set_deploy(root, {"target": "kubernetes", "image": IMAGE})
    assert_one_line_error(cli("deploy", cwd=root, env=env), 2, "deploy.kubernetes.context is not set")
    # a real context whose API server refuses: the server-side dry run fails, nothing is created or changed
    _set_deploy(root, {"target": "kubernetes", "image": IMAGE, "kubernetes": {"context": "staging"}})
    r = cli("deploy", cwd=root, env=env)
    assert_one_line_error(r, 2, "kubectl apply --dry-run=server failed", "'staging'")
    assert seen and all(method == "GET" for method, _ in seen), seen
    assert not (root / ".lepton" / "deployment.json").exists()
    assert _production(root) is None


FAKE_KUBECTL = """#!{python}
# A fake kubectl: logs its arguments (one JSON list per line) and answers as a healthy cluster would.
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
verb = [a for a in args if not a.startswith("-")]
if "rollout" in args and "status" in args and os.environ.get("FAKE_ROLLOUT_FAIL"):
    print('error: deployment "toy" exceeded its progress deadline', file=sys.stderr)
    sys.exit(1)
if "rollout" in args and "status" in args:
    print('deployment "toy" successfully rolled out')
elif "get" in args:
    print(json.dumps({{"status": {{"replicas": 2, "readyReplicas": 2,
                     "conditions": [{{"type": "Available", "status": "True", "message": "minimum availability"}}]}}}}))
"""


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _strip(call: list[str]) -> list[str]:
    """A call without the --context/--namespace prefix every cluster call carries."""
    assert call[:4] == ["--context", "staging", "--namespace", "ml"], call
    return call[4:]


def test_apply_path_with_a_fake_kubectl(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "kubectl"
    fake.write_text(FAKE_KUBECTL.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "kubectl.log"
    env = {**KEY, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_KUBECTL_LOG": str(log)}
    deploy = {"target": "kubernetes", "image": IMAGE,
              "kubernetes": {"context": "staging", "namespace": "ml", "rollout_timeout": 60}}
    root = _tagged(tmp_path / "toy", deploy)

    r = cli("deploy", cwd=root, env=env)
    assert r.code == 0, r
    assert "toy v1 on kubernetes: healthy at http://toy.ml.svc.cluster.local:8080" in r.out
    calls = _calls(log)
    assert calls[0] == ["config", "get-contexts", "staging", "--no-headers"]
    work = root / ".lepton" / "deploy" / "kubernetes" / "toy-v1"
    assert [_strip(c) for c in calls[1:]] == [
        ["apply", "--dry-run=server", "-f", str(work)],
        ["apply", "-f", str(work)],
        ["rollout", "status", "deployment/toy", "--timeout=60s"],
    ]
    assert sorted(p.name for p in work.iterdir()) == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]
    record = json.loads((root / ".lepton" / "deployment.json").read_text())
    assert record["status"] == "healthy" and record["state"]["context"] == "staging"
    rolled = 'deployment "toy" successfully rolled out'
    assert record["health"] == [{"check": "rollout", "passed": True, "detail": rolled}]
    assert _production(root) == 1

    log.unlink()
    r = cli("deploy", "status", cwd=root, env=env)
    assert r.code == 0 and "healthy" in r.out, r
    assert _strip(_calls(log)[1]) == ["get", "deployment", "toy", "-o", "json"]

    # v2's rollout fails: v1's manifests are applied again, the deploy fails (exit 1), v1 stays recorded
    for args in (("train", "-p", "acc=0.91"), ("gate",), ("tag",)):
        assert cli(*args, cwd=root, env=KEY).code == 0, args
    log.unlink()
    r = cli("deploy", cwd=root, env={**env, "FAKE_ROLLOUT_FAIL": "1"})
    assert_one_line_error(r, 1, "toy v2", "progress deadline", "v1 was put back")
    assert [_strip(c)[:2] for c in _calls(log)[1:]] == [
        ["apply", "--dry-run=server"], ["apply", "-f"], ["rollout", "status"], ["apply", "-f"]]
    assert _strip(_calls(log)[-1]) == ["apply", "-f", str(work)]
    failed = json.loads((root / ".lepton" / "deployment.failed.json").read_text())
    assert failed["status"] == "failed" and failed["version"] == 2
    assert json.loads((root / ".lepton" / "deployment.json").read_text())["version"] == 1
    assert _production(root) == 1

    log.unlink()
    r = cli("deploy", "stop", cwd=root, env=env)
    assert r.code == 0 and "stopped" in r.out, r
    assert _strip(_calls(log)[1]) == [
        "delete", "deployment.apps,service,horizontalpodautoscaler.autoscaling,poddisruptionbudget.policy", "toy",
        "--ignore-not-found"]
