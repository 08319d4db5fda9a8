"""A small HTTP server on loopback that speaks the Hub endpoints huggingface_hub uses to push.

POST /api/repos/create (409 with a url when the repo exists), POST /api/validate-yaml,
POST /api/models/<repo>/preupload/<rev>, the LFS batch API and its upload URLs, and
POST /api/models/<repo>/commit/<rev> with NDJSON, PUT /api/models/<repo>/settings (visibility),
DELETE /api/repos/delete, GET /api/whoami-v2 (``whoami``: a write token of user ``tester``
in ``huggingtweets``).
Commits and files are kept for assertions;
``faults`` injects error answers (a 503 on the commit endpoint, say).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import QuietServer


@dataclass
class Commit:
    repo: str
    message: str
    files: dict[str, bytes]
    oid: str


NOT_FOUND = {"error": "Repository not found"}
WRITE_TOKEN: dict[str, Any] = {
    "type": "user",
    "name": "tester",
    "orgs": [{"name": "huggingtweets"}],
    "auth": {"type": "access_token", "accessToken": {"displayName": "ci", "role": "write"}},
}


@dataclass
class HubState:
    token: str
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    # (method, path) -> status code to answer instead, or None to answer normally
    faults: list[Callable[[str, str], int | None]] = field(default_factory=list)
    whoami: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(WRITE_TOKEN))
    echo: bool = False  # validate-yaml answers 400 quoting the request's Authorization

    def files(self, repo: str) -> dict[str, bytes]:
        merged: dict[str, bytes] = {}
        for c in self.commits:
            if c.repo == repo:
                merged.update(c.files)
        return merged


class FakeHub:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.state = HubState(token=token)
        state = self.state
        hub = self

        class Handler(BaseHTTPRequestHandler):
            # Headers and body go out in two writes: with Nagle on, the second waits for the
            # client's delayed ACK, 40 ms a request on loopback.
            disable_nagle_algorithm = True

            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def reply(
                self, status: int, body: Any = None, text: str | None = None, code: str = ""
            ) -> None:
                data = text.encode() if text is not None else json.dumps(body or {}).encode()
                self.send_response(status)
                if body == NOT_FOUND:  # as the Hub: huggingface_hub reads the error's kind here
                    code = "RepoNotFound"
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header(
                    "Content-Type", "text/plain" if text is not None else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def handle_any(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                state.requests.append((method, path))
                data = self.body()
                for fault in state.faults:
                    status = fault(method, path)
                    if status is not None:
                        return self.reply(status, {"error": "injected fault"})
                if path.startswith("/lfs-upload/"):  # presigned-style URL: no token
                    oid = path.rsplit("/", 1)[1]
                    if hashlib.sha256(data).hexdigest() != oid:
                        return self.reply(400, {"error": "sha256 mismatch"})
                    state.lfs[oid] = data
                    return self.reply(200, {})
                payload = data
                parts = path.strip("/").split("/")
                kind = ""  # a Space's paths start with spaces/, and its repos are keyed so
                if parts[0] == "spaces" and method in ("GET", "HEAD"):
                    kind, parts = "spaces/", parts[1:]
                if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
                    # a file download, as from_pretrained asks: the Hub's own 404s
                    repo, name = f"{kind}{parts[0]}/{parts[1]}", "/".join(parts[4:])
                    if repo not in state.repos:
                        return self.reply(404, NOT_FOUND)
                    files = state.files(repo)
                    if name not in files:
                        return self.reply(404, {"error": "Entry not found"}, code="EntryNotFound")
                    return self.download(repo, files[name])
                if method == "POST" and path == "/api/validate-yaml":  # anonymous, as on the Hub
                    return self.validate(json.loads(payload))
                if self.headers.get("Authorization") != f"Bearer {state.token}":
                    return self.reply(401, {"error": "Invalid credentials"})
                if method == "GET" and path == "/api/whoami-v2":
                    return self.reply(200, state.whoami)
                if method == "DELETE" and path == "/api/repos/delete":
                    body = json.loads(payload)
                    repo = f"{body.get('organization') or 'me'}/{body['name']}"
                    repo = f"spaces/{repo}" if body.get("type") == "space" else repo
                    if repo not in state.repos:
                        return self.reply(404, NOT_FOUND)
                    del state.repos[repo]
                    return self.reply(200, {})
                if method == "POST" and path == "/api/repos/create":
                    return self.create(json.loads(payload))
                if path.endswith("/info/lfs/objects/batch"):
                    return self.lfs_batch(json.loads(payload))
                parts = path.strip("/").split("/")
                kind = "spaces/" if parts[:2] == ["api", "spaces"] else ""
                if kind:  # a Space's endpoints are a model's, under /api/spaces/
                    parts[1] = "models"
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    repo, action = f"{kind}{parts[2]}/{parts[3]}", parts[4]
                    if repo not in state.repos:
                        return self.reply(404, NOT_FOUND)
                    if action == "preupload":
                        return self.preupload(json.loads(payload))
                    if action == "commit":
                        return self.commit(repo, payload)
                if parts[:2] == ["api", "models"] and len(parts) == 5 and parts[4] == "settings":
                    repo = f"{kind}{parts[2]}/{parts[3]}"
                    if repo not in state.repos:
                        return self.reply(404, NOT_FOUND)
                    if method == "PUT":
                        visibility = json.loads(payload).get("visibility")
                        if visibility is not None:
                            state.repos[repo]["private"] = visibility == "private"
                        return self.reply(200, {})
                return self.reply(404, {"error": f"fake hub: no route {method} {path}"})

            def do_POST(self) -> None:
                self.handle_any("POST")

            def do_PUT(self) -> None:
                self.handle_any("PUT")

            def do_DELETE(self) -> None:
                self.handle_any("DELETE")

            def do_GET(self) -> None:
                self.handle_any("GET")

            def do_HEAD(self) -> None:
                self.handle_any("HEAD")

            def download(self, repo: str, data: bytes) -> None:
                """A file as the Hub serves it: the headers huggingface_hub's cache keys on."""
                commits = [c.oid for c in state.commits if c.repo == repo]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", commits[-1] if commits else "0" * 40)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def create(self, body: dict[str, Any]) -> None:
                repo = f"{body.get('organization') or 'me'}/{body['name']}"
                if body.get("type") == "space":  # kept apart from a model of the same name
                    if body.get("sdk") != "static":
                        return self.reply(400, {"error": "a Space needs its sdk"})
                    repo = f"spaces/{repo}"
                url = f"{hub.url}/{repo}"
                if repo in state.repos:
                    return self.reply(
                        409, {"error": "You already created this model repo", "url": url}
                    )
                private = body.get("visibility") == "private" or body.get("private") is True
                state.repos[repo] = {"private": private}
                return self.reply(200, {"url": url, "name": repo})

            def validate(self, body: dict[str, Any]) -> None:
                if state.echo:  # a 400 that quotes the request, as a broken server might
                    said = f"bad card; you sent {self.headers.get('Authorization')}"
                    return self.reply(400, {"error": said})
                content = body.get("content", "")
                if not content.startswith("---\n"):
                    return self.reply(400, text="no metadata block")
                meta = yaml.safe_load(content.split("---\n", 2)[1])
                if not isinstance(meta, dict) or not isinstance(meta.get("tags", []), list):
                    return self.reply(400, text="invalid metadata")
                if body.get("repoType") == "space" and (
                    meta.get("sdk") not in ("static", "gradio", "docker")
                    or not isinstance(meta.get("title", ""), str)
                    or len(str(meta.get("short_description", ""))) > 60
                ):  # the Hub's rules for a Space's card
                    return self.reply(400, text="invalid Space metadata")
                return self.reply(200, {"errors": [], "warnings": []})

            def preupload(self, body: dict[str, Any]) -> None:
                files = [
                    {
                        "path": f["path"],
                        "shouldIgnore": False,
                        "uploadMode": "lfs"
                        if f["path"].endswith(".safetensors") or f["size"] > 100_000
                        else "regular",
                    }
                    for f in body["files"]
                ]
                return self.reply(200, {"files": files})

            def lfs_batch(self, body: dict[str, Any]) -> None:
                objects = []
                for o in body["objects"]:
                    entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] not in state.lfs:
                        entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{o['oid']}"}}
                    objects.append(entry)
                return self.reply(200, {"transfer": "basic", "objects": objects})

            def commit(self, repo: str, payload: bytes) -> None:
                header: dict[str, Any] = {}
                files: dict[str, bytes] = {}
                for line in payload.decode().splitlines():
                    item = json.loads(line)
                    value = item["value"]
                    if item["key"] == "header":
                        header = value
                    elif item["key"] == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] == "lfsFile":
                        if value["oid"] not in state.lfs:
                            return self.reply(
                                400, {"error": f"LFS object missing: {value['path']}"}
                            )
                        files[value["path"]] = state.lfs[value["oid"]]
                oid = hashlib.sha1(payload).hexdigest()
                state.commits.append(Commit(repo, header.get("summary", ""), files, oid))
                return self.reply(
                    200,
                    {
                        "commitUrl": f"{hub.url}/{repo}/commit/{oid}",
                        "commitOid": oid,
                        "success": True,
                    },
                )

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeHub:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def serve(self, repo: str, folder: Path) -> None:
        """``folder``'s files as the public model ``repo``, as from_pretrained downloads it."""
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }
        self.state.repos[repo] = {"private": False}
        # the commit of these very files: a client's cache, which keys on it, never serves
        # another test's files served under the same name
        digest = hashlib.sha1(repo.encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha1(files[name]).digest())
        oid = digest.hexdigest()
        self.state.commits.append(Commit(repo, "the stand-in model", files, oid))

    def reset(self) -> None:
        # the token it was made with: a test may have changed it (a page's own "...")
        self.state.__init__(token=self.token)  # type: ignore[misc]
