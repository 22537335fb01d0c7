"""A real GCS-protocol server on loopback (gcp-storage-emulator) for dvc-gs to talk to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from configobj import ConfigObj

from helpers.dvc_repo import ROOT, DvcRepo
from helpers.servers import free_port, stop

# gcsfs asks GCS's gRPC control plane for the bucket type first; an emulator has none,
# and each ask would wait 60 s before gcsfs falls back to the JSON API.
EMULATOR_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


REMOTE = "storage"  # the remote that README's "Sharing" section makes the default


def remote_url() -> str:
    """The ``gs://`` URL of the project's remote as committed in ``.dvc/config``."""
    config = ConfigObj(str(ROOT / ".dvc" / "config"))  # DVC's own config format
    return config[f'remote "{REMOTE}"']["url"]


@dataclass(frozen=True)
class GcsEmulator:
    """The emulator's endpoint and the bucket path of the project's remote on it."""

    endpoint: str
    prefix: str  # "<bucket>/<path>" of the remote, as gcsfs names it

    def fs(self):
        os.environ.update(EMULATOR_ENV)  # read when gcsfs is first imported
        import gcsfs

        return gcsfs.GCSFileSystem(endpoint_url=self.endpoint, token="anon", cache_timeout=0)

    def object_path(self, md5: str) -> str:
        """Where DVC keeps the object with this md5 on the remote."""
        return f"{self.prefix}/files/md5/{md5[:2]}/{md5[2:]}"

    def use_in(self, repo: DvcRepo, endpoint: str | None = None) -> None:
        """Make the project's remote ``repo``'s default and point it at this emulator (or
        ``endpoint``), locally only: README's set-up step, with the emulator for the bucket."""
        repo.env.update(EMULATOR_ENV)
        repo.dvc("remote", "default", "--local", REMOTE)
        repo.dvc("remote", "modify", "--local", REMOTE, "endpointurl", endpoint or self.endpoint)
        repo.dvc("remote", "modify", "--local", REMOTE, "allow_anonymous_login", "true")


@contextmanager
def gcs_emulator() -> Iterator[GcsEmulator]:
    """Start ``gcp-storage-emulator`` in memory with the remote's bucket; stop it after."""
    bucket, _, path = remote_url().removeprefix("gs://").partition("/")
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "gcp-storage-emulator"),
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--in-memory",
        "--default-bucket",
        bucket,
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.1)
        yield GcsEmulator(f"http://127.0.0.1:{port}", f"{bucket}/{path}".rstrip("/"))
    finally:
        stop(process, timeout=10)
