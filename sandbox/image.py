"""Build the sandbox image, the registry way or offline, and skip work already done.

Two ways, one result (a venv at ``/opt/venv``, the agent at ``/opt/shuyu/agent``, uid
10001, entrypoint ``python -m agent``):

* **registry** — ``images/Dockerfile`` from ``python:3.11-slim-bookworm``, when the base
  can be pulled (or is already local);
* **offline** — ``images/build-rootfs.sh`` debootstraps Debian bookworm (minbase) from the
  host's apt mirror and installs the pinned wheels (downloaded once by pip into a cache)
  into it; the tar is ``docker import``-ed as a local base, and ``images/Dockerfile.agent``
  adds the agent layer on top, with the network off.

Content hashes make repeated builds cheap: the *base hash* covers everything the base is
made from (requirements, build script); the *image hash* covers the base hash, the agent
Dockerfile and every agent source file. An image labelled with the image hash is reused
as it is (seconds); a base labelled with the base hash, or a cached rootfs tar, skips
debootstrap. Jobs run on the image **ID** (``sha256:…``) recorded by
:mod:`sandbox.registry`, never on a tag.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors

from sandbox.errors import EngineUnavailable, ImageError

__all__ = [
    "AGENT_DIR",
    "IMAGES_DIR",
    "BuiltImage",
    "ImageSources",
    "apt_mirror",
    "build_image",
    "find_image",
]

log = logging.getLogger(__name__)

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
AGENT_DIR = Path(__file__).resolve().parent / "agent"
REGISTRY_BASE = "python:3.11-slim-bookworm"
LABEL_HASH = "org.shuyu.content-hash"
LABEL_BASE = "org.shuyu.base-hash"
LABEL_METHOD = "org.shuyu.build-method"

Method = Literal["registry", "offline"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    image_id: str  # "sha256:…", what jobs run on
    content_hash: str
    method: str
    tag: str
    reused: bool


@dataclass(frozen=True)
class ImageSources:
    """Where the image is built from; tests point these at copies."""

    images_dir: Path = IMAGES_DIR
    agent_dir: Path = AGENT_DIR

    def agent_files(self) -> list[Path]:
        return sorted(
            p for p in self.agent_dir.rglob("*.py") if "__pycache__" not in p.parts and p.is_file()
        )

    def base_hash(self) -> str:
        return _hash(
            [
                ("suite", b"debian bookworm minbase python3 python3-venv"),
                ("requirements.txt", (self.images_dir / "requirements.txt").read_bytes()),
                ("build-rootfs.sh", (self.images_dir / "build-rootfs.sh").read_bytes()),
            ]
        )

    def image_hash(self, method: Method) -> str:
        parts: list[tuple[str, bytes]] = [("method", method.encode())]
        if method == "offline":
            parts.append(("base", self.base_hash().encode()))
            parts.append(("Dockerfile.agent", (self.images_dir / "Dockerfile.agent").read_bytes()))
        else:
            parts.append(("Dockerfile", (self.images_dir / "Dockerfile").read_bytes()))
            parts.append(("requirements.txt", (self.images_dir / "requirements.txt").read_bytes()))
        for f in self.agent_files():
            parts.append((f"agent/{f.relative_to(self.agent_dir)}", f.read_bytes()))
        return _hash(parts)


def _hash(parts: Iterable[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in parts:
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def apt_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian mirror the host's apt uses (deb822 ``URIs:`` or one-line ``deb`` form)."""
    paths = (
        list(sources)
        if sources is not None
        else [
            Path("/etc/apt/sources.list"),
            *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
            *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
        ]
    )
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
            elif line.startswith("deb ") and "bookworm " in line + " ":
                words = [w for w in line.split()[1:] if not w.startswith("[")]
                if words and words[0].rstrip("/").endswith("/debian"):
                    return words[0]
    return "http://deb.debian.org/debian"


def find_image(client: docker.DockerClient, content_hash: str) -> Any | None:
    """The local image labelled with this content hash, if any."""
    found = client.images.list(filters={"label": f"{LABEL_HASH}={content_hash}"})
    return found[0] if found else None


def _registry_reachable(client: docker.DockerClient) -> bool:
    try:
        client.images.get(REGISTRY_BASE)
        return True
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError:
        return False
    try:
        client.images.pull(REGISTRY_BASE)
        return True
    except docker.errors.APIError:
        return False


def build_image(
    client: docker.DockerClient,
    repository: str,
    cache_dir: Path,
    *,
    method: Literal["auto", "registry", "offline"] = "auto",
    sources: ImageSources | None = None,
    progress: Progress = lambda _msg: None,
) -> BuiltImage:
    """Build (or find) the sandbox image; returns its image ID and how it was made."""
    src = sources or ImageSources()
    chosen: Method
    candidates: tuple[Method, ...] = ("offline", "registry")
    for candidate in candidates:
        if method not in ("auto", candidate):
            continue
        existing = find_image(client, src.image_hash(candidate))
        if existing is not None:
            progress(f"image up to date ({candidate} build {existing.id[:19]})")
            return BuiltImage(
                existing.id,
                src.image_hash(candidate),
                candidate,
                (existing.tags or [""])[0],
                reused=True,
            )
    if method == "auto":
        chosen = "registry" if _registry_reachable(client) else "offline"
        progress(f"building the {chosen} way" + (" (no registry)" if chosen == "offline" else ""))
    else:
        chosen = method
    content_hash = src.image_hash(chosen)
    tag = f"{repository}:{content_hash[:16]}"
    labels = {LABEL_HASH: content_hash, LABEL_METHOD: chosen}
    with tempfile.TemporaryDirectory(prefix="shuyu-image-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(src.agent_dir, ctx / "agent", ignore=shutil.ignore_patterns("__pycache__"))
        if chosen == "registry":
            shutil.copy(src.images_dir / "Dockerfile", ctx / "Dockerfile")
            shutil.copy(src.images_dir / "requirements.txt", ctx / "requirements.txt")
            image = _docker_build(client, ctx, "Dockerfile", tag, labels, {}, network=True)
        else:
            base = _offline_base(client, repository, cache_dir, src, progress)
            labels[LABEL_BASE] = src.base_hash()
            shutil.copy(src.images_dir / "Dockerfile.agent", ctx / "Dockerfile")
            progress("adding the agent layer")
            image = _docker_build(client, ctx, "Dockerfile", tag, labels, {"BASE": base}, False)
    progress(f"built {tag} ({image.id[:19]})")
    return BuiltImage(image.id, content_hash, chosen, tag, reused=False)


def _docker_build(
    client: docker.DockerClient,
    ctx: Path,
    dockerfile: str,
    tag: str,
    labels: dict[str, str],
    buildargs: dict[str, str],
    network: bool,
) -> Any:
    try:
        image, _logs = client.images.build(
            path=str(ctx),
            dockerfile=dockerfile,
            tag=tag,
            labels=labels,
            buildargs=buildargs,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode=None if network else "none",
        )
    except docker.errors.BuildError as exc:
        tail = " | ".join(
            str(c.get("stream", c.get("error", ""))).strip() for c in list(exc.build_log)[-5:]
        )
        raise ImageError(
            f"the sandbox image did not build: {exc.msg}",
            code="sandbox.image_build",
            hint=f"last build output: {tail}",
        ) from exc
    except docker.errors.APIError as exc:
        raise EngineUnavailable(
            f"the Docker engine refused the build: {exc.explanation or exc}",
            hint="check `docker info`; run scripts/ensure-docker.sh",
        ) from exc
    return image


def _offline_base(
    client: docker.DockerClient,
    repository: str,
    cache_dir: Path,
    src: ImageSources,
    progress: Progress,
) -> str:
    """The local base image's tag: reused by label, else imported from a cached tar, else
    built with debootstrap."""
    base_hash = src.base_hash()
    tag = f"{repository}-base:{base_hash[:16]}"
    if client.images.list(filters={"label": f"{LABEL_BASE}={base_hash}"}):
        progress(f"base image {tag} is cached")
        return tag
    cache_dir.mkdir(parents=True, exist_ok=True)
    rootfs = cache_dir / f"rootfs-{base_hash[:16]}.tar"
    if not rootfs.exists():
        wheels = cache_dir / "wheels"
        progress("downloading the pinned wheels (cached)")
        _download_wheels(src.images_dir / "requirements.txt", wheels)
        mirror = apt_mirror()
        progress(f"debootstrap bookworm from {mirror} (a few minutes, once)")
        _run(["bash", str(src.images_dir / "build-rootfs.sh"), str(rootfs), str(wheels), mirror])
        for old in cache_dir.glob("rootfs-*.tar"):  # keep one rootfs, not one per edit
            if old != rootfs:
                old.unlink()
    progress(f"importing {rootfs.name} as {tag}")
    try:
        client.api.import_image_from_file(
            str(rootfs),
            repository=tag.split(":")[0],
            tag=tag.split(":")[1],
            changes=[f"LABEL {LABEL_BASE}={base_hash}", 'CMD ["/bin/false"]'],
        )
    except docker.errors.APIError as exc:
        raise EngineUnavailable(
            f"docker import of the base rootfs failed: {exc.explanation or exc}",
            hint=f"delete {rootfs} to rebuild it, then retry",
        ) from exc
    return tag


def _download_wheels(requirements: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    cmd += ["--only-binary=:all:", "--no-deps", "--python-version", "3.11"]
    cmd += ["--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none"]
    for p in [*platforms, "manylinux2014_x86_64", "any"]:
        cmd += ["--platform", p]
    _run([*cmd, "-r", str(requirements), "-d", str(dest)])


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise ImageError(
            f"the offline image build failed at `{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]}`",
            code="sandbox.image_build",
            hint="; ".join(tail) or "run it by hand to see why",
        )
