"""Tiny container-image root filesystems built from the host, no network: a static busybox serving the AgentCore
contract from a shell loop (``nc -ll -e``), and a Python one (the host's python3.11 and the libraries it loads).

They stand in for an unpacked image (what ``hangar.artifacts.images`` stores) in sandbox-level tests, and are the
content of the images the e2e tests build with buildah.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = (
    *("sh", "ls", "cat", "echo", "id", "nc", "env", "head", "tr", "printf", "sleep", "pwd", "mkdir", "touch"),
    *("dd", "grep", "ln", "kill", "setsid", "wc", "tee", "rm", "ps", "stat", "seq"),
)
APP_UID = 1234
APP_GID = 2345

# One HTTP/1.0-style exchange per connection: /ping answers Healthy, /invocations echoes facts about the sandbox.
HANDLER = r"""#!/bin/sh
read -r method path proto
len=0
while read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in [Cc]ontent-[Ll]ength:*) len=${line#*:}; len=$(echo $len);; esac
done
body=""
[ "$len" -gt 0 ] && body=$(head -c "$len")
case "$path" in
  /ping) out='{"status":"Healthy"}' ;;
  /invocations*|/mcp*|/)
    [ -f /tmp/first ] || echo "$body" > /tmp/first
    out="{\"agent\":\"busybox\",\"uid\":$(id -u),\"gid\":$(id -g),\"pwd\":\"$(pwd)\""
    out="$out,\"greeting\":\"$GREETING\",\"runtime\":\"$FROM_RUNTIME\""
    out="$out,\"first\":$(cat /tmp/first),\"body\":$body}" ;;
  *) out='{"error":"not found"}' ;;
esac
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n'
printf 'Content-Length: %s\r\nConnection: close\r\n\r\n%s' "${#out}" "$out"
"""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def busybox_rootfs(root: Path) -> Path:
    """A busybox image: /bin with applets, /etc/passwd with root and ``app`` (1234:2345), /srv/handler.sh, a
    world-writable /data, and /app owned by nobody in particular (the WorkingDir the tests set)."""
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    for name in APPLETS:
        (root / "bin" / name).symlink_to("busybox")
    _write(root / "etc" / "passwd", f"root:x:0:0:root:/root:/bin/sh\napp:x:{APP_UID}:{APP_GID}:app:/home/app:/bin/sh\n")
    _write(root / "etc" / "group", f"root:x:0:\napp:x:{APP_GID}:\n")
    _write(root / "srv" / "handler.sh", HANDLER, 0o755)
    for name, mode in (("tmp", 0o1777), ("data", 0o777), ("app", 0o755), ("root", 0o700), ("home/app", 0o755)):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name).chmod(mode)
    _write(root / "app" / "README", "an image file\n")
    (root / "etc" / "escape").symlink_to("/etc/shadow")  # absolute symlinks are normal in images
    root.chmod(0o755)
    return root


BUSYBOX_ARGV = ("/bin/nc", "-ll", "-p", "8080", "-e", "/srv/handler.sh")
BUSYBOX_PORT_ARGV = ("/bin/sh", "-c", 'exec nc -ll -p "$PORT" -e /srv/handler.sh')  # 8080, 8000 or 9000


def _needed_libraries(binary: str) -> list[Path]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split("=>")
        target = parts[-1].strip().split(" (")[0].strip()
        if target.startswith("/"):
            found.append(Path(target))
    return found


def python_rootfs(root: Path, site_packages: list[Path] | None = None) -> Path:
    """An image with the host's Python (Debian's 3.11, as ``/usr/bin/python3``): its stdlib and the shared libraries
    its extension modules load, hard-linked where the file system allows (cheap) and copied otherwise, plus the
    busybox image's files. ``site_packages`` are copied into ``/usr/lib/python3/dist-packages`` (Debian's path)."""
    python = "/usr/bin/python3.11"
    busybox_rootfs(root)
    for name in ("lib", "lib64"):  # merged /usr, as Debian has it: one copy of each library
        (root / "usr" / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(f"usr/{name}")
    stdlib = Path("/usr/lib/python3.11")
    skip = ("site-packages", "dist-packages", "test", "config-3.11-*", "idlelib", "tkinter", "turtledemo", "ensurepip")
    _link_tree(stdlib, root / "usr/lib/python3.11", skip=skip)
    libs: set[Path] = set(_needed_libraries(python))
    extensions = list((stdlib / "lib-dynload").glob("*.so"))
    for package in site_packages or []:
        extensions += list(package.rglob("*.so")) if package.is_dir() else []
    for extension in extensions:
        libs.update(_needed_libraries(str(extension)))
    for lib in libs:
        real = Path(os.path.realpath(lib))
        for path in {lib, real}:
            target = root / str(path).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(real, target)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(python, root / "usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    site = root / "usr/lib/python3/dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    for package in site_packages or []:
        if package.is_dir():
            _link_tree(package, site / package.name)
        else:
            shutil.copy2(package, site / package.name)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root


def _link_tree(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard links where possible (cheap); compiled bytecode is kept, as real images keep it."""

    def copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*skip), copy_function=copy, symlinks=True)


def distributions(*names: str) -> list[Path]:
    """Top-level packages or modules ``names`` of this interpreter's site-packages, with their dist-info."""
    site = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    found: list[Path] = []
    for entry in site.iterdir():
        stem = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name.removesuffix(".py")
        if stem.lower() in {n.lower() for n in names}:
            found.append(entry)
    return found


SDK_PACKAGES = (
    "bedrock_agentcore",
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "python_dateutil",
    "six",
    "urllib3",
    "certifi",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "starlette",
    "anyio",
    "sniffio",
    "idna",
    "uvicorn",
    "h11",
    "click",
    "websockets",
)


NODE_SERVER = """
const http = require("http");
let turns = 0;
http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    res.setHeader("content-type", "application/json");
    if (req.url === "/ping") return res.end(JSON.stringify({ status: "Healthy" }));
    turns += 1;
    res.end(JSON.stringify({ agent: "node", version: process.version, uid: process.getuid(), turns, body }));
  });
}).listen(Number(process.env.PORT || 8080), "0.0.0.0");
"""
NODE_ARGV = ("/usr/bin/node", "/app/server.js")


def node_rootfs(root: Path) -> Path:
    """An image with nothing but Debian's node, the libraries it loads and /app/server.js: no shell, no Python."""
    node = "/usr/bin/node"
    for path in [Path(node), *_needed_libraries(node), *Path("/lib64").glob("ld-linux*")]:
        real = Path(os.path.realpath(path))
        for name in {path, real}:
            target = root / str(name).lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                try:
                    os.link(real, target)
                except OSError:
                    shutil.copy2(real, target)
    _write(root / "etc" / "passwd", "root:x:0:0:root:/root:/nonexistent\nnode:x:1000:1000::/home/node:/nonexistent\n")
    _write(root / "app" / "server.js", NODE_SERVER)
    (root / "tmp").mkdir(mode=0o1777)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root
