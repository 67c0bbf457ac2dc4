"""The one SAE registry: every SAE of the workspace, trained here or registered from elsewhere, is a
row of the `saes` table and a sae-lens directory under artifacts/saes/<id>/. It finds, describes and
loads them (once per process) for features, steering, influence and Jacobians alike, and registers
new ones (validated against their model; their dashboards built by a job)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from loupe.core.activations import cache_activations
from loupe.errors import Conflict, NotFound, Unprocessable
from loupe.services.ids import ID_PATTERN, ID_RULE
from loupe.services.models import LoadedModel, ModelService
from loupe.services.saes.training import WEIGHTS_DIGEST, WEIGHTS_FILE, load_sae
from loupe.services.workspace import Workspace
from loupe.storage.artifacts import atomic_dir, file_digest, read_manifest, write_manifest
from loupe.storage.models import Job, SAERecord

ROW_KEYS = ("model_id", "hook_name", "architecture", "d_in", "d_sae", "source", "dataset_id")


class SAERegistry:
    def __init__(self, ws: Workspace, models: ModelService):
        self.ws = ws
        self.models = models
        self._loaded: dict[str, Any] = {}
        self._manifests: dict[str, dict[str, Any]] = {}
        self._digests: dict[tuple[str, int, int, int], str] = {}  # weights files hashed this process
        self._lock = threading.Lock()

    # -- finding -----------------------------------------------------------------------------
    def record(self, sae_id: str) -> SAERecord:
        rec = self.ws.saes.get(sae_id)
        if rec is None:
            known = (
                ", ".join(r.id for r in self.ws.saes.list())
                or "none yet (the build trains them in the background; see /api/jobs)"
            )
            raise NotFound(f"unknown SAE {sae_id!r}; registered SAEs: {known}")
        return rec

    def records(self, model_id: str | None = None) -> list[SAERecord]:
        return self.ws.saes.list(model_id)

    def for_hook(self, model_id: str, hook_name: str) -> SAERecord | None:
        """The first SAE of `model_id` that reads `hook_name`."""
        return next((r for r in self.records(model_id) if r.hook_name == hook_name), None)

    # Files are found from the workspace, not from paths stored in rows, so a workspace can move
    # (another mount point, a copied volume) without breaking its SAEs.
    def sae_dir(self, sae_id: str) -> Path:
        return self.ws.artifact("saes", sae_id)

    def dashboard_dir(self, sae_id: str) -> Path:
        return self.ws.artifact("dashboards", sae_id)

    def restore(self) -> int:
        """Rows for complete SAE directories that have none (a database recreated beside kept artifacts),
        and every row's version brought in line with its weights (a kill between a retrain's files and
        its row). Returns how many rows were added."""
        root = self.ws.artifact("saes")
        n = 0
        for d in sorted(root.iterdir()) if root.exists() else []:
            m = read_manifest(d)
            if m is None or self.ws.saes.get(d.name) is not None or not m.get("hook_name"):
                continue
            fields = {k: m.get(k) for k in ROW_KEYS}
            fields["source"] = fields["source"] or "demo"  # trained here (manifests of trained SAEs carry no source)
            self.ws.saes.upsert(d.name, **fields, path=str(d))
            n += 1
        for rec in self.ws.saes.list():
            self.sync_version(rec.id)
        return n

    # -- versions ----------------------------------------------------------------------------
    def weights_key(self, sae_id: str) -> str | None:
        """The digest of the SAE's weights file: from its manifest (written with it), else hashed once
        per process (directories written before manifests recorded it). None: not trained yet."""
        d = self.sae_dir(sae_id)
        m = read_manifest(d)
        if m is None:
            return None
        if m.get(WEIGHTS_DIGEST):
            return str(m[WEIGHTS_DIGEST])
        f = d / WEIGHTS_FILE
        try:
            st = f.stat()
        except FileNotFoundError:
            return None
        ident = (str(f), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._digests.get(ident)
        if hit is None:
            hit = file_digest(f)
            with self._lock:
                self._digests[ident] = hit
        return hit

    def sync_version(self, sae_id: str) -> SAERecord | None:
        """Record the SAE's weights on its row: new weights under the same id make a new version (labels
        of the older one are then shown as such)."""
        key = self.weights_key(sae_id)
        return None if key is None else self.ws.saes.set_weights(sae_id, key)

    # -- loading -----------------------------------------------------------------------------
    def load(self, sae_id: str) -> tuple[Any, SAERecord]:
        """(the sae-lens SAE, its row), loaded once per process."""
        rec = self.record(sae_id)
        with self._lock:
            if sae_id not in self._loaded:
                if read_manifest(self.sae_dir(sae_id)) is None:
                    raise Conflict(
                        f"SAE {sae_id!r} is not trained yet: {self.status(rec).get('message') or 'see /api/jobs'}"
                    )
                self._loaded[sae_id] = load_sae(self.sae_dir(sae_id), self.ws.settings.device)
            return self._loaded[sae_id], rec

    def load_for(self, sae_id: str, lm: LoadedModel) -> tuple[Any, SAERecord]:
        """An SAE to apply to `lm`: it must belong to that model and read one of its hooks."""
        sae, rec = self.load(sae_id)
        if rec.model_id not in (None, lm.id):
            raise Unprocessable(f"SAE {sae_id!r} belongs to model {rec.model_id!r}, not {lm.id!r}")
        if rec.hook_name not in lm.bridge.hook_dict:
            raise Unprocessable(f"SAE {sae_id!r} reads {rec.hook_name!r}, which this model does not have")
        return sae, rec

    def forget(self, sae_id: str) -> None:
        """Drop the loaded copy (its files were rebuilt)."""
        with self._lock:
            self._loaded.pop(sae_id, None)
            self._manifests.pop(sae_id, None)

    # -- describing --------------------------------------------------------------------------
    def dashboard_manifest(self, rec: SAERecord) -> dict[str, Any] | None:
        """The dashboards' manifest when it matches the row's key (cached: read once per build)."""
        want = (rec.dashboards or {}).get("key")
        hit = self._manifests.get(rec.id)
        if hit is not None and hit.get("key") == want:
            return hit
        m = read_manifest(self.dashboard_dir(rec.id))
        if m is None or m.get("key") != want:
            return None
        self._manifests[rec.id] = m
        return m

    def dashboards_ready(self, rec: SAERecord) -> bool:
        return self.dashboard_manifest(rec) is not None

    def chain(self, rec: SAERecord) -> list[Job]:
        """The jobs last queued to build this SAE or its dashboards (in order), if any were recorded."""
        return self.ws.jobs.many(list((rec.dashboards or {}).get("jobs", [])))

    def status(self, rec: SAERecord) -> dict[str, Any]:
        """Whether dashboards exist, else the state of the jobs building them: the first that failed (the
        ones after it never run), else the one running or next in line."""
        if self.dashboards_ready(rec):
            return {"state": "ready"}
        chain = self.chain(rec)
        if chain:
            failed = next((j for j in chain if j.status == "failed"), None)
            if failed is not None:
                return _job_state("failed", failed)
            active = next((j for j in chain if j.status in ("running", "queued")), None)
            if active is not None:
                return _job_state("building", active)
            return {"state": "failed", "message": "its jobs finished but the dashboards are missing; retry them"}
        job = self.ws.jobs.latest(dashboards_job_name(rec))
        if job is None:
            return {"state": "pending", "message": "dashboards are queued behind the SAE's training and evaluation"}
        if job.status == "done":  # it ran, but its commit is not there (killed before it): not built
            return {
                "state": "failed",
                "job_id": job.id,
                "job_name": job.name,
                "message": "its dashboards job finished but the dashboards were not committed; retry them",
            }
        return {
            "state": "failed" if job.status == "failed" else "building",
            "job_id": job.id,
            "progress": None if not job.progress_total else job.progress_done / job.progress_total,
            "message": job.error.splitlines()[0] if job.status == "failed" and job.error else job.message,
        }

    def describe(self, rec: SAERecord) -> dict[str, Any]:
        return {
            "id": rec.id,
            "model_id": rec.model_id,
            "hook_name": rec.hook_name,
            "architecture": rec.architecture,
            "d_in": rec.d_in,
            "d_sae": rec.d_sae,
            "source": rec.source,
            "dataset_id": rec.dataset_id,
            "version": rec.version or 1,
            "path": str(self.sae_dir(rec.id)),
            "metrics": rec.metrics or {},
            "dashboards": self.status(rec),
        }

    def list(self, model_id: str | None = None) -> list[dict[str, Any]]:
        return [self.describe(r) for r in self.records(model_id)]

    # -- registering -------------------------------------------------------------------------
    def register_trained(
        self,
        sae_id: str,
        model_id: str,
        hook_name: str,
        architecture: str,
        source: str = "demo",
        dataset_id: str | None = None,
    ) -> SAERecord:
        """The row of an SAE trained here (kept when it exists: metrics and dashboards stay). `source`:
        "demo" for the world's SAEs, "trained" for those trained from the app (on `dataset_id`)."""
        m = read_manifest(self.sae_dir(sae_id)) or {}
        old = self.ws.saes.get(sae_id)
        rec = self.ws.saes.upsert(
            sae_id,
            model_id=model_id,
            hook_name=hook_name,
            architecture=m.get("architecture", architecture),
            d_in=int(m.get("d_in", old.d_in if old else 0)),
            d_sae=int(m.get("d_sae", old.d_sae if old else 0)),
            source=source,
            path=str(self.sae_dir(sae_id)),
            dataset_id=dataset_id,
        )
        return self.sync_version(sae_id) or rec

    def record_jobs(self, sae_id: str, job_ids: Sequence[int]) -> None:
        """Remember the jobs queued to build this SAE (its status follows them)."""
        self.ws.saes.merge_dashboards(sae_id, {"jobs": list(job_ids)})

    def busy(self, rec: SAERecord) -> Job | None:
        """A queued or running job that builds this SAE or its dashboards."""
        jobs = [*self.chain(rec), *filter(None, [self.ws.jobs.latest(dashboards_job_name(rec))])]
        return next((j for j in jobs if j.status in ("queued", "running")), None)

    def delete(self, sae_id: str) -> None:
        """An SAE's row, features, labels, files, dashboards and evaluation; not while a job builds it."""
        rec = self.record(sae_id)
        job = self.busy(rec)
        if job is not None:
            raise Conflict(
                f"SAE {sae_id!r} is being built by job {job.id} ({job.name}); cancel it (DELETE /api/jobs/{job.id}) or wait"
            )
        self.forget(sae_id)
        self.ws.saes.delete(sae_id)
        for d in (self.sae_dir(sae_id), self.dashboard_dir(sae_id), self.ws.artifact("evals", "sae", sae_id)):
            shutil.rmtree(d, ignore_errors=True)

    def register_external(
        self,
        sae_id: str,
        model_id: str,
        path: str | None = None,
        release: str | None = None,
        hub_sae_id: str | None = None,
    ) -> SAERecord:
        """Validate an SAE against a loaded model and register it (its files copied into the workspace).

        Weights are read only from safetensors (sae-lens's format: cfg.json + sae_weights.safetensors);
        nothing is unpickled. The SAE's hook must exist in the model and have the SAE's input width."""
        if not ID_PATTERN.match(sae_id or ""):
            raise Unprocessable(f"id must be {ID_RULE}")
        if self.ws.saes.get(sae_id) is not None:
            raise Conflict(f"an SAE with id {sae_id!r} is already registered; choose another id")
        if (path is None) == (release is None):
            raise Unprocessable(
                "give either `path` (a sae-lens SAE directory) or `release` and `hub_sae_id` (sae-lens's registry)"
            )
        lm = self.models.get(model_id)
        src = None if path is None else sae_source_dir(path, self.ws.settings.resolved_sae_roots())
        if src is not None:
            sae, source = _load_directory(src, path or ""), "disk"
        else:
            sae, source = _load_pretrained(release or "", hub_sae_id), "pretrained"
        hook = _check_fits(sae, lm)
        with atomic_dir(self.sae_dir(sae_id)) as tmp:
            if src is not None:
                for f in src.iterdir():
                    if f.is_file() and (f.suffix in (".json", ".safetensors")):
                        shutil.copy2(f, tmp / f.name, follow_symlinks=False)
            else:
                sae.save_inference_model(tmp)
            fields = {
                "model_id": model_id,
                "hook_name": hook,
                "architecture": sae.cfg.architecture(),
                "d_in": int(sae.cfg.d_in),
                "d_sae": int(sae.cfg.d_sae),
                "source": source,
            }
            weights = tmp / WEIGHTS_FILE
            digest = {WEIGHTS_DIGEST: file_digest(weights)} if weights.exists() else {}
            write_manifest(
                tmp,
                {
                    "key": "external",
                    "sae_id": sae_id,
                    **fields,
                    "origin": path or f"{release}/{hub_sae_id}",
                    **digest,
                },
            )
        rec = self.ws.saes.upsert(sae_id, **fields, path=str(self.sae_dir(sae_id)))
        return self.sync_version(sae_id) or rec


def _job_state(state: str, job: Job) -> dict[str, Any]:
    failed = job.status == "failed"
    message = (job.error or "").splitlines()[0] if failed and job.error else job.message
    return {
        "state": state,
        "job_id": job.id,
        "job_name": job.name,
        "progress": None if failed or not job.progress_total else job.progress_done / job.progress_total,
        "message": f"{job.name}: {message}" if failed else message,
    }


def dashboards_job_name(rec: SAERecord) -> str:
    """The job that builds an SAE's dashboards: named by preset for SAEs the build trains."""
    return f"saes.dashboards.{rec.id.split('-', 1)[-1]}" if rec.source == "demo" else f"saes.dashboards.{rec.id}"


def sae_source_dir(path: str, roots: Sequence[Path]) -> Path:
    """The SAE directory `path` names (relative paths: under the first root), if it lies inside one of
    `roots` with no symbolic link on the way. Anything else, missing paths included, gets one and the
    same message, so that answers do not tell which paths exist outside the roots."""
    real_roots = [r.expanduser().resolve() for r in roots]
    refused = Unprocessable(
        "path must name an SAE directory inside this server's SAE import folders (LOUPE_SAE_ROOTS: "
        f"{', '.join(map(str, real_roots))}) with no symbolic link on the way; copy the SAE there"
    )
    given = Path(path).expanduser()
    if not given.is_absolute():
        given = real_roots[0] / given
    if ".." in given.parts:
        raise refused
    for root, real in zip(roots, real_roots, strict=True):
        for base in dict.fromkeys((Path(os.path.abspath(root.expanduser())), real)):
            if given == base or not given.is_relative_to(base):
                continue
            cur = real  # walk down from the resolved root, refusing each symlink (the root's own path may have some)
            for part in given.relative_to(base).parts:
                cur = cur / part
                if cur.is_symlink():
                    raise refused
            if not cur.is_dir() or not cur.resolve().is_relative_to(real):
                raise refused
            return cur
    raise refused


def _load_directory(src: Path, path: str) -> Any:
    links = sorted(f.name for f in src.iterdir() if f.is_symlink())
    if links:
        raise Unprocessable(f"{path} holds symbolic links ({', '.join(links)}); copy the files themselves")
    missing = [f for f in ("cfg.json", "sae_weights.safetensors") if not (src / f).is_file()]
    if missing:
        raise Unprocessable(
            f"{path} lacks {', '.join(missing)}: Loupe reads SAEs only in sae-lens's safetensors format"
        )
    try:
        return load_sae(src)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the user's file, not our bug
        raise Unprocessable(f"sae-lens could not load {path}: {type(exc).__name__}: {exc}") from exc


def _load_pretrained(release: str, hub_sae_id: str | None) -> Any:
    if not hub_sae_id:
        raise Unprocessable("with `release`, give `hub_sae_id` too (the SAE's id inside the release)")
    from sae_lens import SAE  # heavy; only this path needs the registry class

    try:
        sae = SAE.from_pretrained(release, hub_sae_id, device="cpu")
    except Exception as exc:  # noqa: BLE001
        raise Unprocessable(
            f"sae-lens could not fetch {release}/{hub_sae_id}: {type(exc).__name__}: {exc} "
            "(the pretrained registry needs the Hugging Face hub; from an offline machine, "
            "download the SAE elsewhere and register its directory with `path`)"
        ) from exc
    return sae[0] if isinstance(sae, tuple) else sae


def _check_fits(sae: Any, lm: LoadedModel) -> str:
    """The SAE's hook, after checking the model has it with the SAE's input width."""
    hook = str(sae.cfg.metadata.hook_name)
    if hook not in lm.bridge.hook_dict:
        raise Unprocessable(
            f"the SAE reads {hook!r}, which model {lm.id!r} does not have "
            f"(e.g. {', '.join(sorted(lm.bridge.hook_dict)[:3])})"
        )
    with lm.lock, torch.no_grad():
        width = cache_activations(lm.bridge, torch.tensor([lm.encode_prompt("hello")]), [hook])[hook].shape[-1]
    if width != sae.cfg.d_in:
        raise Unprocessable(f"the SAE's d_in is {sae.cfg.d_in} but {hook} of model {lm.id!r} has width {width}")
    return hook
