"""An Airflow sandbox for DAG tests: a temporary AIRFLOW_HOME with a SQLite metadata DB (migrated
once per session), the dags/ folder, one sources config, and the session's embedder."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

DAGS_FOLDER = Path(__file__).resolve().parents[2] / "dags"

LABELS = """default: {classification: internal, groups: [everyone]}
rules:
  - {match: "hr/**", classification: confidential, groups: [hr]}
"""

DOCS = {
    "travel.md": "# Travel policy\n\nEmployees book flights through the travel desk. Economy "
    "class applies to flights shorter than six hours; longer flights may use premium economy.\n",
    "hr/leave.md": "# Parental leave\n\nParents receive sixteen weeks of paid parental leave, "
    "taken within the first year after a birth or adoption.\n",
    "security.txt": "Quarterly security review: firewall rules, badge access logs and the "
    "incident response runbook are checked every quarter by the security team.\n",
}


def write_folder(root: Path, docs: dict[str, str] = DOCS, labels: str = LABELS) -> Path:
    for relative, text in docs.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "citewell.labels.yaml").write_text(labels, encoding="utf-8")
    return root


def write_golden(path: Path, rows: list[tuple[str, str | None]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"question": q, "expected": e}) for q, e in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_GOLDEN: list[tuple[str, str | None]] = [
    ("how many weeks of parental leave do parents get", "hr/leave.md"),
    ("which class for flights shorter than six hours", "travel.md"),
    # An unanswerable line, as in examples/questions.jsonl: skipped by retrieval checks.
    ("who founded the company", None),
]
BAD_GOLDEN: list[tuple[str, str | None]] = [
    ("how many weeks of parental leave do parents get", "missing/nowhere.md")
]


@dataclass
class Webhook:
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)


S3_BUCKET = "citewell-dags"
S3_CONNECTION = "citewell_s3"


@dataclass
class Sandbox:
    root: Path
    data_dir: Path
    folders: dict[str, Path]
    webhook: Webhook
    s3: Any = None  # tests/s3_server.S3Server: the bucket S3_BUCKET holds DOCS under kb/

    def settings(self) -> Any:
        from citewell.core.settings import Settings

        return Settings(data_dir=self.data_dir)

    def dagbag(self) -> Any:
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(DAGS_FOLDER))


def _start_webhook() -> tuple[HTTPServer, Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            hook.received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_port}/alert"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hook


@pytest.fixture(scope="session")
def airflow_sandbox(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, s3_server: Any
) -> Iterator[Sandbox]:
    if "airflow" in sys.modules:
        pytest.skip("airflow was imported before its sandbox was configured")
    root = tmp_path_factory.mktemp("airflow")
    folders = {name: write_folder(root / "sources" / name) for name in ("kb", "rb", "ev", "bi")}
    client = s3_server.client()
    client.create_bucket(Bucket=S3_BUCKET)
    client.put_object(Bucket=S3_BUCKET, Key="kb/citewell.labels.yaml", Body=LABELS.encode())
    for relative, text in DOCS.items():
        client.put_object(Bucket=S3_BUCKET, Key=f"kb/{relative}", Body=text.encode())
    golden_good = write_golden(root / "golden" / "good.jsonl", GOOD_GOLDEN)
    golden_bad = write_golden(root / "golden" / "bad.jsonl", BAD_GOLDEN)
    # Line 2 claims an answer but names no document: refused by the first task.
    golden_broken = root / "golden" / "broken.jsonl"
    golden_broken.write_text(
        '{"question": "q1", "expected": "travel.md"}\n{"question": "q2", "answerable": true}\n',
        encoding="utf-8",
    )
    config = {
        "sources": [
            {
                "name": "kb",
                "path": "sources/kb",
                "index": "kb",
                "schedule": "@hourly",
                "batch_size": 2,
            },
            {
                "name": "rb",
                "path": "sources/rb",
                "index": "rb",
                "schedule": None,
                "rebuild": {"golden": str(golden_good), "k": 3, "min_hit_rate": 1.0},
            },
            # Same folder and index as rb, but a smoke test that cannot pass.
            {
                "name": "rb_bad",
                "path": "sources/rb",
                "index": "rb",
                "schedule": None,
                "rebuild": {"golden": str(golden_bad), "k": 3, "min_hit_rate": 1.0},
            },
            {
                "name": "bi",
                "path": "sources/bi",
                "index": "bi",
                "schedule": None,
                "rebuild": {"golden": str(golden_broken)},
            },
            {
                "name": "ev",
                "path": "sources/ev",
                "index": "ev",
                "schedule": None,
                "evaluation": {
                    "golden": str(golden_bad),
                    "k": 3,
                    "floors": {"hit_rate": 0.5, "mrr": 0.2},
                },
            },
            # An S3 prefix reached only through the Airflow connection (no AWS_* variables).
            {
                "name": "s3kb",
                "type": "s3",
                "bucket": S3_BUCKET,
                "prefix": "kb",
                "index": "s3kb",
                "schedule": None,
                "batch_size": 2,
                "aws_conn_id": S3_CONNECTION,
            },
        ]
    }
    sources_file = root / "sources.yaml"
    sources_file.write_text(json.dumps(config), encoding="utf-8")  # JSON is valid YAML
    server, webhook = _start_webhook()
    env = {
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'home' / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "CITEWELL_SOURCES_FILE": str(sources_file),
        "CITEWELL_DATA_DIR": str(root / "data"),
        "CITEWELL_AIRFLOW_RETRIES": "0",
        "CITEWELL_ALERT_WEBHOOK": webhook.url,
        # The Amazon provider's connection: keys, region and the endpoint (moto on loopback).
        f"AIRFLOW_CONN_{S3_CONNECTION.upper()}": json.dumps(
            {
                "conn_type": "aws",
                "login": s3_server.env()["AWS_ACCESS_KEY_ID"],
                "password": s3_server.env()["AWS_SECRET_ACCESS_KEY"],
                "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"},
            }
        ),
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    (root / "home").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_PROFILE",
        ):
            mp.delenv(key, raising=False)
        # Tasks run in this process under dag.test(): give them the session's loaded model
        # instead of loading one per task.
        import citewell.ingestion.pipeline
        import citewell.retrieval.service

        mp.setattr(citewell.ingestion.pipeline, "build_embedder", lambda settings: embedder)
        mp.setattr(citewell.retrieval.service, "build_embedder", lambda settings: embedder)

        from airflow.utils import db

        db.initdb()  # what `airflow db migrate` does on an empty SQLite file
        yield Sandbox(
            root=root, data_dir=root / "data", folders=folders, webhook=webhook, s3=s3_server
        )
    server.shutdown()
    os.environ.pop("_AIRFLOW_PARSING_CONTEXT_DAG_ID", None)
