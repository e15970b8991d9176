"""The server under test: spawned by the bench or reached at a URL; its CPU and RSS; provenance.

- :class:`SpawnedServer` runs ``rejoinder serve`` (``python -m server.cli
  serve``) on a free loopback port, waits for ``/readyz`` and stops it with
  SIGTERM. CPU and RSS come from psutil on its pid (children included).
- :class:`ExternalServer` uses ``--url``; CPU and RSS come from the
  ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` lines
  of its ``/metrics``, when it exports them.
- :func:`machine_info`, :func:`bundle_info` and :func:`git_commit` give what
  every report prints (LATENCY.md "Honesty rules").
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Usage:
    """Server resource use over one round: CPU seconds, wall seconds, peak RSS (bytes)."""

    cpu_s: float | None
    wall_s: float
    rss_max: int | None

    @property
    def cpu_share(self) -> float | None:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return None if self.cpu_s is None or self.wall_s <= 0 else self.cpu_s / self.wall_s


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when the server cannot be reached."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback or user-given URL
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (OSError, ValueError):
        return 0, ""


def base_urls(url: str) -> tuple[str, str]:
    """(ws://host:port, http://host:port) from any server URL (ws, wss, http or https, any path)."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    secure = parts.scheme in ("wss", "https")
    return f"{'wss' if secure else 'ws'}://{parts.netloc}", f"{'https' if secure else 'http'}://{parts.netloc}"


async def _offered(ws_base: str, token: str | None) -> list[str]:
    from clients.client import connect

    async with connect(f"{ws_base}/v1/native", token=token) as c:
        return list(c.pipelines)


def offered_pipelines(ws_base: str, token: str | None = None) -> list[str]:
    """The pipelines the server offers (from the native ``session.created``)."""
    return asyncio.run(_offered(ws_base, token))


def parse_process_metrics(text: str) -> tuple[float | None, int | None]:
    """(process_cpu_seconds_total, process_resident_memory_bytes) from Prometheus text."""
    cpu = rss = None
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            cpu = float(line.split()[1])
        elif line.startswith("process_resident_memory_bytes "):
            rss = int(float(line.split()[1]))
    return cpu, rss


_PROVIDER = re.compile(r'^rejoinder_pipeline_provider\{pipeline="(\w+)",provider="(\w+)"\} 1(\.0)?$')


def parse_providers(text: str) -> dict[str, str]:
    """{pipeline: ONNX Runtime provider} from the server's ``rejoinder_pipeline_provider`` lines."""
    found = (_PROVIDER.match(line.strip()) for line in text.splitlines())
    return {m.group(1): m.group(2).removesuffix("ExecutionProvider") for m in found if m}


def server_providers(http_base: str) -> dict[str, str]:
    status, text = http_get(f"{http_base}/metrics")
    return parse_providers(text) if status == 200 else {}


class _Server:
    ws_base: str
    http_base: str
    pid: int | None = None

    def __init__(self) -> None:
        self._t0 = 0.0
        self._cpu0: float | None = None
        self._rss_max: int | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> tuple[float | None, int | None]:
        raise NotImplementedError

    def begin(self) -> None:
        """Start measuring a round: CPU now, and RSS sampled every 0.5 s until :meth:`end`."""
        self._t0 = time.perf_counter()
        self._cpu0, rss = self._sample()
        self._rss_max = rss
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(0.5):
                _, r = self._sample()
                if r is not None:
                    self._rss_max = max(self._rss_max or 0, r)

        self._sampler = threading.Thread(target=loop, name="bench-rss", daemon=True)
        self._sampler.start()

    def end(self) -> Usage:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(2)
        cpu1, rss = self._sample()
        if rss is not None:
            self._rss_max = max(self._rss_max or 0, rss)
        cpu = None if cpu1 is None or self._cpu0 is None else cpu1 - self._cpu0
        return Usage(cpu, time.perf_counter() - self._t0, self._rss_max)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ExternalServer(_Server):
    """A server someone else runs, at ``url``."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.ws_base, self.http_base = base_urls(url)
        self.metrics_note = ""

    def _sample(self) -> tuple[float | None, int | None]:
        status, text = http_get(f"{self.http_base}/metrics")
        cpu, rss = parse_process_metrics(text) if status == 200 else (None, None)
        if cpu is None and rss is None:
            self.metrics_note = "the server's /metrics has no process_* lines: CPU and RSS unknown"
        return cpu, rss

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        _wait_ready(self.http_base, timeout_s, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PipelinesFailed(RuntimeError):
    """The server will not become ready: ``reasons[pipeline]`` says why each failed to load."""

    def __init__(self, reasons: dict[str, str], body: str) -> None:
        super().__init__(body)
        self.reasons = reasons


_FAILED = re.compile(r"pipeline (\w+) failed to load: (.*?)(?=; pipeline \w+ failed to load: |$)")


def _load_failures(body: str) -> dict[str, str]:
    """Pipelines a /readyz body says failed to load (a permanent state, unlike warming up)."""
    return {m.group(1): m.group(2).strip() for m in _FAILED.finditer(body.strip())}


def _wait_ready(http_base: str, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        status, body = http_get(f"{http_base}/readyz", timeout=2.0)
        if status == 200:
            return
        failed = _load_failures(body)
        if failed:
            raise PipelinesFailed(failed, body.strip())
        time.sleep(0.25)
    raise TimeoutError(f"{http_base}/readyz not ready after {timeout_s:.0f} s: {body.strip() or 'no answer'}")


class SpawnedServer(_Server):
    """``rejoinder serve`` in a subprocess on a free port; its log goes to ``log_path``."""

    def __init__(self, pipelines: str, log_path: Path, *, extra_args: list[str] | None = None,
                 ready_timeout_s: float = 180.0) -> None:  # fmt: skip
        super().__init__()
        port = free_port()
        self.ws_base, self.http_base = f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        self.cmd = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                    "--pipelines", pipelines, *(extra_args or [])]  # fmt: skip
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        try:
            import psutil

            self._ps: Any = psutil.Process(self.pid)
        except ImportError:
            self._ps = None
        try:
            _wait_ready(self.http_base, ready_timeout_s, self.proc)
        except BaseException:
            self.close()
            raise

    @classmethod
    def start(cls, pipelines: list[str], log_path: Path, **options: Any) -> tuple[SpawnedServer, dict[str, str]]:
        """Start with ``pipelines``; a server that is never ready because some failed to load
        is restarted without them. Returns the server and {pipeline: why it is missing}.
        """
        missing: dict[str, str] = {}
        wanted = list(pipelines)
        while True:
            try:
                return cls(",".join(wanted), log_path, **options), missing
            except PipelinesFailed as e:
                missing.update(e.reasons)
                rest = [p for p in wanted if p not in e.reasons]
                if not rest or rest == wanted:
                    raise
                wanted = rest

    def _sample(self) -> tuple[float | None, int | None]:
        if self._ps is None:
            return None, None
        try:
            procs = [self._ps, *self._ps.children(recursive=True)]
            cpu = rss = 0.0
            for p in procs:
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
            return cpu, int(rss)
        except Exception:  # noqa: BLE001 - the process is gone
            return None, None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


# ---------------------------------------------------------------- provenance
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Machine, CPU count, memory, OS, Python and runtime versions, load at start."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


# Bundle kinds each pipeline loads (others are listed too, marked unused).
PIPELINE_BUNDLES = {"cascade": ("textlm", "asr"), "fused": ("fused", "codec"), "echo": ()}


def bundle_info(bundles_dir: Path | None = None) -> list[dict[str, Any]]:
    """Each bundle's name, kind and the sha256 (first 12) of its graphs, from manifest.json.

    The folder is ``bundles_dir``, else ``REJOINDER_BUNDLES_DIR`` (which a spawned server
    inherits), else the checkout's ``bundles/``."""
    env = os.environ.get("REJOINDER_BUNDLES_DIR")
    root = bundles_dir or (Path(env) if env else ROOT / "bundles")
    out: list[dict[str, Any]] = []
    for manifest in sorted(root.glob("*/manifest.json")):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            out.append({"dir": manifest.parent.name, "error": str(e)})
            continue
        graphs = m.get("graphs") or {}
        out.append({
            "dir": manifest.parent.name,
            "name": m.get("name"),
            "kind": m.get("kind"),
            "graphs": {g: str((v or {}).get("sha256") or "")[:12] for g, v in graphs.items()},
        })  # fmt: skip
    return out


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit, read from .git without running git (None outside a checkout)."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: ..."
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(":", 1)[1].strip()
        common = git / "commondir"
        base = (git / common.read_text().strip()).resolve() if common.is_file() else git
        for g in (git, base):
            if (g / ref).is_file():
                return (g / ref).read_text().strip()
        for g in (git, base):
            packed = g / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except OSError:
        return None
    return None


def skipped_pipelines(log_path: Path) -> dict[str, str]:
    """Pipelines a spawned server skipped, with its reasons (from its JSON log lines)."""
    out: dict[str, str] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("msg") == "pipeline unavailable" and rec.get("pipeline"):
            out[str(rec["pipeline"])] = str(rec.get("reason", ""))
    return out
