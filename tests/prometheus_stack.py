"""Real Prometheus and Alertmanager processes for tests (Debian's `prometheus` and `prometheus-alertmanager`
packages, installed by tools/install-debs.sh): each in its own temporary folder, on a free loopback port,
polled on /-/ready before use, and stopped with SIGTERM (then SIGKILL).

Intervals are 1 s everywhere, so a rule with ``for: 0s`` reaches a webhook within seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kubecluster import free_port

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


class StackError(RuntimeError):
    pass


def missing_binaries() -> list[str]:
    return [b for b in (PROMETHEUS, ALERTMANAGER) if shutil.which(b) is None]


class _Process:
    binary = ""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.dir = workdir / f"{self.binary}-{self.port}"
        self.dir.mkdir(parents=True)
        self.log = self.dir / "log"
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30):
        path = shutil.which(self.binary)
        if path is None:
            raise StackError(f"`{self.binary}` is not installed (run `make debs`, i.e. tools/install-debs.sh)")
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([path, *self.args()], stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StackError(f"{self.binary} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise StackError(f"{self.binary} was not ready after {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, path: str, **params: str) -> Any:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=5) as r:
            return json.loads(r.read())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Prometheus(_Process):
    """Scrapes ``targets`` (host:port, path /metrics) every second, evaluates ``rules`` (rule-file YAML or
    JSON text) every second and sends alerts to ``alertmanager`` (host:port) if given."""

    binary = PROMETHEUS

    def __init__(self, workdir: Path, targets: list[str], rules: str | None = None,
                 alertmanager: str | None = None):
        super().__init__(workdir)
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "test", "static_configs": [{"targets": targets}]}],
        }
        if rules:
            (self.dir / "rules.yml").write_text(rules)
            config["rule_files"] = [str(self.dir / "rules.yml")]
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        # JSON is YAML: no YAML library needed.
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=2))

    def args(self) -> list[str]:
        return [f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={self.address}"]

    def query(self, expr: str) -> float | None:
        """The single value of an instant query, None when the result is empty."""
        body = self.get("/api/v1/query", query=expr)
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict]:
        return self.get("/api/v1/alerts")["data"]["alerts"]


class Alertmanager(_Process):
    """Routes every alert to one webhook (``webhook_url``, with ``Authorization: Bearer <token>``), grouped
    by alertname, namespace and modelreuse, with 1 s group wait and interval."""

    binary = ALERTMANAGER

    def __init__(self, workdir: Path, webhook_url: str, token: str | None = None):
        super().__init__(workdir)
        webhook: dict[str, Any] = {"url": webhook_url, "send_resolved": False}
        if token:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
        config = {
            "route": {"receiver": "webhook", "group_by": ["alertname", "namespace", "modelreuse"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "webhook", "webhook_configs": [webhook]}],
        }
        (self.dir / "alertmanager.yml").write_text(json.dumps(config, indent=2))

    def args(self) -> list[str]:
        # An empty cluster address turns gossip off (no wait for peers to settle).
        return [f"--config.file={self.dir / 'alertmanager.yml'}", f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address={self.address}", "--cluster.listen-address="]

    def alerts(self) -> list[dict]:
        return self.get("/api/v2/alerts")
