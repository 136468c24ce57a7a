"""Run the demo's services as containers of the built images: ``ffa-lora demo --containers buildah``.

``deploy/images/build.sh`` builds ``ffa-lora/{cloud-coordinator,edge-aggregator,client-agent}``.
This launcher starts each service of :func:`ffa_lora_tools.demo.run_demo` from its image instead of
from the host's Python: one working container per service (``buildah from``), the service run
with ``buildah run`` as the image's unprivileged user (uid 10001) and its entrypoint
(``ffa-lora serve ROLE``), the run folder bind-mounted at the same path so that the generated
configs, certificates and data work unchanged, and loopback networking shared with the host (the
configs bind 127.0.0.1). Isolation is ``chroot`` by default: buildah's OCI-runtime-free mode, the
one that works where crun/runc cannot set up cgroups or rlimits (nested VMs, hybrid cgroup hosts
such as this project's CI machines); pass ``oci`` where the runtime works.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ffa_lora.errors import FFALoraError

#: image name per service role (``deploy/images/build.sh`` tags them PREFIX/NAME:TAG)
IMAGE_NAMES = {"coordinator": "cloud-coordinator", "edge": "edge-aggregator", "client": "client-agent",
               "keyholder": "cloud-coordinator"}  # key holders run from the coordinator's image
#: the images' unprivileged user (deploy/images/Dockerfile)
IMAGE_UID = 10001


class BuildahLauncher:
    """Start services from the built images with ``buildah run``; :meth:`close` removes them.

    Args:
        prefix, tag: the images are ``localhost/{prefix}/{name}:{tag}``.
        isolation: buildah's ``--isolation`` (``chroot`` or ``oci``).
    """

    def __init__(self, *, prefix: str = "ffa-lora", tag: str = "0.1.0", isolation: str = "chroot") -> None:
        if shutil.which("buildah") is None:
            raise FFALoraError("--containers buildah: buildah is not installed (apt-get install buildah podman)")
        self.prefix, self.tag, self.isolation = prefix, tag, isolation
        self._containers: list[str] = []
        missing = [self.image(role) for role in IMAGE_NAMES if not self._image_exists(self.image(role))]
        if missing:
            raise FFALoraError(f"image(s) {', '.join(missing)} not built: run `make images` "
                               f"(deploy/images/build.sh --tag {tag}) first")

    def image(self, role: str) -> str:
        return f"localhost/{self.prefix}/{IMAGE_NAMES[role]}:{self.tag}"

    @staticmethod
    def _image_exists(ref: str) -> bool:
        return subprocess.run(["buildah", "inspect", "--type", "image", ref],
                              check=False, capture_output=True).returncode == 0

    def prepare_run_folder(self, run: Path) -> None:
        """Hand the run folder to the images' user: the services write state, logs and adapters."""
        for path in _walk(run):
            os.chown(path, IMAGE_UID, IMAGE_UID, follow_symlinks=False)

    def command(self, name: str, role: str, config: Path, run: Path, env: dict[str, str]) -> list[str]:
        """The command line that runs service ``name`` (role ``role``) in a fresh container."""
        ctr = f"ffa-lora-{run.name}-{name}"
        subprocess.run(["buildah", "rm", ctr], check=False, capture_output=True)  # a leftover from a killed run
        made = subprocess.run(["buildah", "from", "--name", ctr, "--pull-never", self.image(role)],
                              check=False, capture_output=True, text=True)
        if made.returncode != 0:
            raise FFALoraError(f"buildah from {self.image(role)} failed: {made.stderr.strip()}")
        self._containers.append(ctr)
        passed = ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "PYTHONUNBUFFERED")
        env_args = [arg for k in passed if k in env for arg in ("--env", f"{k}={env[k]}")]
        return ["buildah", "run", "--isolation", self.isolation, "--network", "host",
                "--user", f"{IMAGE_UID}:{IMAGE_UID}", "--volume", f"{run}:{run}", *env_args,
                ctr, "--", "ffa-lora", "serve", role, "--config", str(config)]

    def close(self) -> None:
        """Remove the working containers (their processes have exited or been stopped)."""
        for ctr in self._containers:
            subprocess.run(["buildah", "rm", ctr], check=False, capture_output=True)
        self._containers.clear()


def _walk(root: Path) -> Iterator[Path]:
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            yield Path(dirpath) / n
