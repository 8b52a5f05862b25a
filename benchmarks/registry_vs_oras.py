#!/usr/bin/env python3
"""lepton-ci's oci:// registry side by side with oras-py and a raw HTTP PUT, on one local registry server.

    python3 benchmarks/registry_vs_oras.py [--sizes 256,1024] [--runs 3]

Run it with the Python of the repository's venv (it has lepton-ci and oras-py): `.venv/bin/python
benchmarks/registry_vs_oras.py`. It makes one random file per size (MiB) and, for each size and round, starts
Debian's `docker-registry` on 127.0.0.1 with its storage in memory (/dev/shm), then runs, interleaved
round-robin (order alternating every round), each in a fresh process after `sync`:

  raw-put      one streaming `PUT` of the file's bytes into a fresh upload session (the server's ingest speed)
  lepton-push  `lepton-ci`'s registry push of a version holding the file (new content each round), with the
               file's digest known as `tag` knows it from the run record
  lepton-push-cold  the same without the digest (it hashes the file first)
  oras-push    oras-py's push of the same file (new content each round)
  lepton-pull  `fetch` of that version into a fresh directory (verified while writing)
  oras-pull    oras-py's pull of its artifact into a fresh directory

and reports medians. Then, once: re-pushing an unchanged version (blob bytes uploaded: must be 0), a version
where one of three files changed (bytes uploaded: only that file), and the peak memory (max RSS) of a push of
the largest file.

Targets: push ≥ 0.95 × raw-put and ≥ oras-push; pull ≥ 1.2 × oras-pull; unchanged re-push uploads 0 bytes;
one changed file of three uploads only that file; peak memory of the largest push ≤ 100 MB.
Exit status: 0 all met, 1 a target missed, 2 setup error.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MiB = 1024 * 1024


def _rewrite_head(path: Path, seed: int) -> None:
    """New content for a new round (so nothing is deduplicated), without rewriting the whole file."""
    with open(path, "r+b") as f:
        f.write(seed.to_bytes(8, "big") * 512)


def worker(argv: list[str]) -> None:
    """One timed operation in a process of its own; prints {"seconds", "maxrss_mb", "sent"} as JSON."""
    op, url, src, dest = argv
    from lepton_ci.oci.client import OciClient, sha256_file
    from lepton_ci.oci.reference import parse_oci_url
    from lepton_ci.registry import open_registry

    ref = parse_oci_url(url)
    sent = 0
    if op == "raw-put":
        import requests

        digest, size = sha256_file(Path(src))
        client = OciClient(ref, credentials=None)
        repo = f"{ref.repository}/raw"
        t0 = time.perf_counter()
        location = client._start_upload(repo, client.scope(repo, "pull,push"), "raw put")
        with open(src, "rb") as f:
            r = requests.put(location, params={"digest": digest}, data=f, headers={"Content-Length": str(size)}, timeout=600)
        assert r.status_code == 201, r.text
        sent = size
    elif op in ("lepton-push", "lepton-push-cold"):
        reg = open_registry(url, Path(dest))
        real = reg.storage.client.push_blob  # type: ignore[attr-defined]

        def counting(repo: str, path: Path, digest: str, size: int) -> bool:
            nonlocal sent
            uploaded = real(repo, path, digest, size)
            sent += size if uploaded else 0
            return uploaded

        reg.storage.client.push_blob = counting  # type: ignore[attr-defined]
        files = [(Path(p).name, Path(p)) for p in src.split(",")]
        # `tag` knows each file's digest from the run record (it verified them just before pushing), so the
        # timed push gets them too; "lepton-push-cold" hashes first, as a push without a run record does.
        known = None if op == "lepton-push-cold" else {name: sha256_file(path)[0][7:] for name, path in files}
        t0 = time.perf_counter()
        reg.push("bench", files, {"run": {"run_id": Path(dest).name}}, sha256=known)
    elif op == "lepton-pull":
        reg = open_registry(url, Path(dest))
        t0 = time.perf_counter()
        reg.fetch("bench", src, Path(dest) / "out")
    elif op == "oras-push":
        import oras.client

        client = oras.client.OrasClient(hostname=ref.host, insecure=True)
        os.chdir(Path(src).parent)
        t0 = time.perf_counter()
        client.push(target=f"{ref.host}/{ref.repository}/oras:latest", files=[Path(src).name], disable_path_validation=True)
    elif op == "oras-pull":
        import oras.client

        client = oras.client.OrasClient(hostname=ref.host, insecure=True)
        t0 = time.perf_counter()
        client.pull(target=f"{ref.host}/{ref.repository}/oras:latest", outdir=str(Path(dest) / "out"))
    else:
        raise SystemExit(f"unknown op {op}")
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "maxrss_mb": rss, "sent": sent}))


def run(op: str, url: str, src: str, dest: str) -> dict[str, float]:
    # Start every sample with no dirty pages: otherwise one tool pays for the writeback of the file the one
    # before it wrote (a GiB at a time), and the ratio measures the disk's timing, not the tools.
    os.sync()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", op, url, src, dest], capture_output=True, text=True, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(f"{op} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,1024", help="file sizes in MiB, comma-separated (default 256,1024)")
    ap.add_argument("--runs", type=int, default=3, help="rounds per size (default 3)")
    args = ap.parse_args()
    if not shutil.which("docker-registry"):
        print("docker-registry is missing (apt-get install docker-registry)", file=sys.stderr)
        return 2
    from tests.support.oci_registry import RegistryServer

    work = Path(tempfile.mkdtemp(prefix="lepton-bench-registry-"))
    # The registry's storage and the pulled files live in memory (tmpfs) where there is one, and each round
    # gets a fresh registry: then every tool reads and writes at memory speed, and the ratio measures the
    # tools, not this machine's disk writeback (which swung single samples by 2x on virtual disks).
    shm = Path("/dev/shm")
    fast = Path(tempfile.mkdtemp(prefix="lepton-bench-", dir=shm if shm.is_dir() else work))
    ok = True
    try:
        rows = []
        for mib in [int(x) for x in args.sizes.split(",")]:
            src = work / f"model-{mib}.bin"
            with open(src, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MiB))
            kinds = ("raw-put", "lepton-push", "lepton-push-cold", "oras-push", "lepton-pull", "oras-pull")
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for rnd in range(args.runs + 1):  # round 0 warms up and is not counted
                with RegistryServer(fast / f"registry-{mib}-{rnd}") as server:
                    url = server.url("bench/models")
                    order = ["raw-put", "lepton-push", "lepton-push-cold", "oras-push"]
                    if rnd % 2:
                        order.reverse()
                    for op in order:
                        _rewrite_head(src, rnd + 1000 * mib + 100 * order.index(op))  # new bytes for each push
                        dest = work / f"{op}-{mib}-{rnd}"
                        dest.mkdir()
                        result = run(op, url, str(src), str(dest))
                        if rnd:
                            times[op].append(result["seconds"])
                    pulls = ["lepton-pull", "oras-pull"] if rnd % 2 == 0 else ["oras-pull", "lepton-pull"]
                    for op in pulls:
                        dest = fast / f"{op}-{mib}-{rnd}"
                        dest.mkdir()
                        result = run(op, url, "latest", str(dest))
                        if rnd:
                            times[op].append(result["seconds"])
                        shutil.rmtree(dest)
                shutil.rmtree(fast / f"registry-{mib}-{rnd}")
            med = {k: statistics.median(v) for k, v in times.items()}
            rate = {k: mib / v for k, v in med.items()}
            push_vs_raw = rate["lepton-push"] / rate["raw-put"]
            push_vs_oras = rate["lepton-push"] / rate["oras-push"]
            pull_vs_oras = rate["lepton-pull"] / rate["oras-pull"]
            rows.append((mib, rate, push_vs_raw, push_vs_oras, pull_vs_oras, rate["lepton-push-cold"] / rate["raw-put"]))
            ok &= push_vs_raw >= 0.95 and push_vs_oras >= 1.0 and pull_vs_oras >= 1.2
        print(
            f"{'size':>8} | {'raw PUT':>9} | {'lepton push':>11} | {'cold push':>9} | {'oras push':>9} | "
            f"{'lepton pull':>11} | {'oras pull':>9} | push/raw | cold/raw | push/oras | pull/oras"
        )
        for mib, rate, a, b, c, cold in rows:
            print(
                f"{mib:>4} MiB | {rate['raw-put']:>5.0f} MB/s | {rate['lepton-push']:>7.0f} MB/s | "
                f"{rate['lepton-push-cold']:>5.0f} MB/s | {rate['oras-push']:>5.0f} MB/s | "
                f"{rate['lepton-pull']:>7.0f} MB/s | {rate['oras-pull']:>5.0f} MB/s | {a:>7.2f}× | {cold:>7.2f}× | "
                f"{b:>8.2f}× | {c:>8.2f}×"
            )
        # Deduplication and memory, once.
        with RegistryServer(fast / "registry-dedup") as server:
            url = server.url("bench/models")
            biggest = work / f"model-{max(int(x) for x in args.sizes.split(','))}.bin"
            _rewrite_head(biggest, 424242)
            first = run("lepton-push", url, str(biggest), str(work / "mem"))
            again = run("lepton-push", url, str(biggest), str(work / "mem"))
            trio = []
            for i in range(3):
                p = work / "trio" / f"part{i}.bin"
                p.parent.mkdir(exist_ok=True)
                p.write_bytes(os.urandom(8 * MiB))
                trio.append(str(p))
            run("lepton-push", url, ",".join(trio), str(work / "trio-1"))
            Path(trio[1]).write_bytes(os.urandom(8 * MiB))
            changed = run("lepton-push", url, ",".join(trio), str(work / "trio-2"))
        print(f"unchanged re-push: {again['sent']:.0f} blob bytes uploaded (target 0)")
        print(f"one of three 8 MiB files changed: {changed['sent'] / MiB:.1f} MiB uploaded (target 8.0)")
        print(f"peak memory of a {biggest.stat().st_size // MiB} MiB push: {first['maxrss_mb']:.0f} MB (target ≤ 100)")
        ok &= again["sent"] == 0 and changed["sent"] == 8 * MiB and first["maxrss_mb"] <= 100
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(fast, ignore_errors=True)
    print("all targets met" if ok else "a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
