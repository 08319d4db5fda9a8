"""A small HTTP server on loopback that speaks the W&B GraphQL calls a takedown makes.

``wandb.Api`` (reached through WANDB_BASE_URL) asks ``Viewer``/``GetDefaultEntity`` for the
key's entity, ``Runs`` for a project's runs filtered by group, and ``DeleteRun`` (with
``deleteArtifacts``) for each. Runs and their artifacts are kept for assertions; a wrong key
gets 401; ``faults`` answers a query by name with a status code instead.
W&B's telemetry posts (``/sdk/otel/...``) are answered and ignored.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.helpers import QuietServer

FAULT_BODY = "fake-wandb-fault-body"  # what a fault answers: it must not reach the job's words


@dataclass
class FakeRun:
    id: str
    project: str
    group: str
    job_type: str
    artifacts: list[str] = field(default_factory=list)


@dataclass
class WandbState:
    key: str
    entity: str = "tester"
    runs: dict[str, FakeRun] = field(default_factory=dict)  # by storage id
    deleted: list[tuple[str, bool]] = field(default_factory=list)  # (run id, with artifacts)
    faults: dict[str, int] = field(default_factory=dict)  # operation name -> status code
    operations: list[str] = field(default_factory=list)

    def add(self, project: str, group: str, job_type: str, artifacts: list[str]) -> FakeRun:
        run = FakeRun(f"run{len(self.runs)}", project, group, job_type, artifacts)
        self.runs[base64.b64encode(f"Run:{run.id}".encode()).decode()] = run
        return run


def _node(storage_id: str, run: FakeRun) -> dict[str, Any]:
    return {
        "projectId": "1",
        "id": storage_id,
        "name": run.id,
        "displayName": f"{run.group}-{run.job_type}",
        "tags": [],
        "sweepName": None,
        "state": "finished",
        "group": run.group,
        "jobType": run.job_type,
        "commit": None,
        "readOnly": False,
        "createdAt": "2026-11-01T00:00:00",
        "heartbeatAt": "2026-11-01T00:00:00",
        "description": None,
        "notes": None,
        "historyLineCount": 0,
        "user": {"name": "tester", "username": "tester"},
    }


class FakeWandb:
    def __init__(self, key: str) -> None:
        self.state = WandbState(key)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.startswith("/graphql"):  # telemetry
                    return self._answer(200, {})
                expected = "Basic " + base64.b64encode(f"api:{state.key}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._answer(401, {"errors": [{"message": "invalid api key"}]})
                request = json.loads(body)
                query, variables = request["query"], request.get("variables") or {}
                name = next(
                    (w for w in ("Viewer", "GetDefaultEntity", "Runs", "DeleteRun") if w in query),
                    "other",
                )
                state.operations.append(name)
                if name in state.faults:
                    return self._answer(state.faults[name], {"errors": [{"message": FAULT_BODY}]})
                self._answer(200, {"data": self._data(name, variables)})

            def _data(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
                if name in ("Viewer", "GetDefaultEntity"):
                    viewer = {"id": "v1", "entity": state.entity, "username": state.entity}
                    return {"viewer": {**viewer, "email": None, "flags": "{}", "teams": {}}}
                if name == "Runs":
                    if variables["entity"] != state.entity:
                        return {"project": None}
                    group = json.loads(variables.get("filters") or "{}").get("group")
                    found = [
                        (sid, run)
                        for sid, run in state.runs.items()
                        if run.project == variables["project"] and group in (None, run.group)
                    ]
                    edges = [{"node": _node(sid, run), "cursor": sid} for sid, run in found]
                    page = {"endCursor": None, "hasNextPage": False}
                    runs = {"edges": edges, "pageInfo": page}
                    return {
                        "project": {
                            "internalId": "1",
                            "runCount": len(edges),
                            "readOnly": False,
                            "runs": runs,
                        }
                    }
                if name == "DeleteRun":
                    run = state.runs.pop(variables["id"])
                    state.deleted.append((run.id, bool(variables.get("deleteArtifacts"))))
                    return {"deleteRun": {"clientMutationId": None}}
                return {}

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        key = self.state.key
        self.state.__init__(key)  # type: ignore[misc]

    def __enter__(self) -> FakeWandb:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
