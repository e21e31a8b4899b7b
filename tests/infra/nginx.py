"""A real nginx in front of dashboard servers, as a facility runs it: on a free loopback port, proxying
the prefix ``/damnit/`` (websockets included) to one server or, without sticky sessions, to several."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.kafka import free_port

CONF = """
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format upstream '$request $status $upstream_addr';
  access_log {dir}/access.log upstream;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  # No temporary files for big responses (plotly.js is 4.4 MB): nginx's workers, not root, cannot write
  # into pytest's private temporary folder, and would cut such a response short.
  proxy_max_temp_file_size 0;
  large_client_header_buffers 4 24k;
  upstream damnit {{ {servers} }}
  server {{
    listen 127.0.0.1:{port};
    location /damnit/ {{
      proxy_pass http://damnit;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $host:$server_port;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 86400;
    }}
  }}
}}
"""


@dataclass
class Proxy:
    port: int
    dir: Path

    @property
    def url(self) -> str:
        """The dashboard's address through the proxy."""
        return f"http://127.0.0.1:{self.port}/damnit/"

    @property
    def origin(self) -> str:
        """For the servers' ``--allow-websocket-origin``."""
        return f"127.0.0.1:{self.port}"

    def access_log(self) -> str:
        """One line per request: the request line, its status and the server that answered."""
        path = self.dir / "access.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def nginx_proxy(workdir: Path, upstreams: list[int]) -> Iterator[Proxy]:
    """nginx proxying ``/damnit/`` to the servers on these loopback ports (round robin), until the block
    ends. Fails the test when nginx is missing or does not start."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (apt-get install -y nginx)", pytrace=False)
    proxy = Proxy(free_port(), Path(workdir) / "nginx")
    proxy.dir.mkdir(parents=True)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in upstreams)
    (proxy.dir / "nginx.conf").write_text(CONF.format(dir=proxy.dir, port=proxy.port, servers=servers))
    proc = subprocess.Popen([nginx, "-c", str(proxy.dir / "nginx.conf"), "-p", str(proxy.dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nginx did not start: {proc.stdout.read().decode()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nginx did not listen within 10 s", pytrace=False)
                time.sleep(0.05)
        yield proxy
    finally:
        proc.terminate()
        proc.wait(10)
