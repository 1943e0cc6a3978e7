"""A real Hypha server with its artifact manager and an S3-compatible store (moto), on 127.0.0.1.

Started once per test session by the ``hypha_server`` fixture (tests/conftest.py): free
ports, its own temporary folder (the server reads the nearest .env), a readiness wait,
and SIGTERM on exit. A collection shaped like the zoo's lets users stage drafts while
only reviewers may commit.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

COLLECTION_WORKSPACE = "bioimage-io"
COLLECTION_ALIAS = "bioimage.io"
ID_PARTS = {"animal_adjective": ["brave", "calm", "eager", "gentle", "lively", "proud", "quiet", "witty"],
            "animal": ["otter", "heron", "lynx", "ibis", "marten", "newt", "puffin", "wombat"]}


@dataclass
class HyphaServer:
    url: str
    s3_url: str
    root_token: str
    jwt_secret: str
    folder: Path

    def user_token(self, user_id: str = "alice", expires_in: int = 3600) -> str:
        """A login token of an ordinary user (signed with the server's secret)."""
        os.environ["HYPHA_JWT_SECRET"] = self.jwt_secret
        from hypha.core import UserInfo, UserPermission
        from hypha.core.auth import create_scope, generate_auth_token

        workspace = f"ws-user-{user_id}"
        user = UserInfo(id=user_id, roles=[], is_anonymous=False, email=f"{user_id}@example.org", parent=None,
                        scope=create_scope(workspaces={workspace: UserPermission.admin}, current_workspace=workspace),
                        expires_at=None)
        return asyncio.run(generate_auth_token(user, expires_in))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, timeout: float, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a test server exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} was not ready within {timeout} s")


def _random_token(n: int = 40) -> str:
    # Long and made of random letters and digits (short root tokens may not contain some words).
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


async def _set_up_collection(server: HyphaServer) -> None:
    from hypha_rpc import connect_to_server

    root = await connect_to_server({"server_url": server.url, "token": server.root_token})
    try:
        await root.create_workspace({"id": COLLECTION_WORKSPACE, "name": COLLECTION_WORKSPACE,
                                     "description": "test zoo", "owners": [], "persistent": True}, overwrite=True)
        manager = await root.get_service("public/artifact-manager")
        await manager.create(alias=COLLECTION_ALIAS, workspace=COLLECTION_WORKSPACE, type="collection",
                             manifest={"name": "BioImage Model Zoo (test)"},
                             config={"permissions": {"*": "r", "@": "l+"}, "id_parts": ID_PARTS})
    finally:
        await root.disconnect()


def start(folder: Path, timeout: float = 90.0) -> tuple[HyphaServer, list[subprocess.Popen]]:
    """Start moto and Hypha in ``folder``; return the server and its processes."""
    s3_port, port = _free_port(), _free_port()
    server = HyphaServer(url=f"http://127.0.0.1:{port}", s3_url=f"http://127.0.0.1:{s3_port}",
                         root_token=_random_token(), jwt_secret=_random_token(), folder=folder)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "HYPHA_JWT_SECRET": server.jwt_secret}
    logs = [open(folder / name, "wb") for name in ("moto.log", "hypha.log")]
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                            cwd=folder, env=env, stdout=logs[0], stderr=subprocess.STDOUT)
    hypha = subprocess.Popen(
        [sys.executable, "-m", "hypha.server", "--host=127.0.0.1", f"--port={port}",
         f"--public-base-url={server.url}", "--enable-s3", f"--endpoint-url={server.s3_url}",
         "--access-key-id=testing", "--secret-access-key=testing", "--region-name=us-east-1",
         "--s3-admin-type=generic", "--workspace-bucket=hypha-workspaces",
         f"--database-uri=sqlite+aiosqlite:///{folder}/artifacts.db", f"--cache-dir={folder}/cache",
         f"--root-token={server.root_token}"],
        cwd=folder, env=env, stdout=logs[1], stderr=subprocess.STDOUT,
    )
    processes = [hypha, moto]
    try:
        _wait(f"{server.url}/health/readiness", timeout, processes)
        asyncio.run(_set_up_collection(server))
    except BaseException:
        stop(processes)
        raise
    return server, processes


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
