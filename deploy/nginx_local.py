#!/usr/bin/env python3
"""Write a copy of deploy/nginx.conf that runs outside Docker, for `nginx -t` and the tests.

Only the lines marked `# local-copy: <name>` in nginx.conf change: the resolver (Docker's DNS is
not here), the `api:8000` address (local replicas instead) and the listen address. Everything the
deployment relies on (WebSocket upgrade, timeouts, body size, retries) stays exactly as shipped.

    python3 deploy/nginx_local.py --upstream 127.0.0.1:8000 --listen 127.0.0.1:18080 --dir /tmp/lb
    nginx -t -e stderr -p /tmp/lb -c /tmp/lb/nginx.conf
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "nginx.conf"
MARKERS = ("resolver", "upstream", "listen")
LOCAL_GROUP = "vsod_local_replicas"


def local_copy(conf: str, upstreams: list[str], listen: str, workdir: Path) -> str:
    """The shipped config with the marked lines pointed at local addresses and files under workdir."""
    if not upstreams:
        raise ValueError("at least one upstream address is needed")
    lines = conf.splitlines()
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        match = re.search(r"#\s*local-copy:\s*(\w+)\s*$", line)
        if match:
            name = match.group(1)
            if name not in MARKERS or name in found:
                raise ValueError(f"unexpected or repeated `# local-copy: {name}` marker")
            found[name] = index
    missing = [name for name in MARKERS if name not in found]
    if missing:
        raise ValueError(f"nginx.conf lacks the `# local-copy:` markers {missing}")

    def indent(index: int) -> str:
        return re.match(r"\s*", lines[index]).group(0)

    target = upstreams[0] if len(upstreams) == 1 else LOCAL_GROUP
    lines[found["resolver"]] = f"{indent(found['resolver'])}resolver 127.0.0.1 valid=5s ipv6=off;"
    lines[found["upstream"]] = f"{indent(found['upstream'])}set $vsod_api {target};"
    lines[found["listen"]] = f"{indent(found['listen'])}listen {listen};"
    text = "\n".join(lines) + "\n"
    text = re.sub(r"^pid .*;$", f"pid {workdir / 'nginx.pid'};", text, count=1, flags=re.MULTILINE)

    # Temp files under workdir rather than the distribution's /var/lib/nginx; several replicas
    # become one upstream group, which a `proxy_pass http://$var` picks by name.
    extra = [
        f"    client_body_temp_path {workdir / 'body'};",
        f"    proxy_temp_path {workdir / 'proxy'};",
    ]
    if len(upstreams) > 1:
        extra += [f"    upstream {LOCAL_GROUP} {{"]
        extra += [f"        server {address} max_fails=1 fail_timeout=10s;" for address in upstreams]
        extra += ["    }"]
    text, count = re.subn(r"^http \{$", "http {\n" + "\n".join(extra), text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise ValueError("nginx.conf has no top-level `http {` block")
    return text


def write_local_copy(upstreams: list[str], listen: str, workdir: Path, source: Path = SHIPPED) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "nginx.conf"
    path.write_text(local_copy(source.read_text(), upstreams, listen, workdir))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", action="append", required=True, help="host:port of a local replica")
    parser.add_argument("--listen", default="127.0.0.1:18080")
    parser.add_argument("--dir", type=Path, required=True, help="folder for the copy, pid and temp files")
    parser.add_argument("--source", type=Path, default=SHIPPED)
    args = parser.parse_args(argv)
    try:
        print(write_local_copy(args.upstream, args.listen, args.dir.resolve(), args.source))
    except (OSError, ValueError) as error:
        print(f"nginx_local: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
