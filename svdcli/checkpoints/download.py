"""Fetching the official weights through huggingface_hub: resumable, verified, into the hub's own cache (or a plain
folder), with the licence and the revision kept beside the weights.

huggingface_hub resumes interrupted files (its `.incomplete` blobs and HTTP Range requests); we add the choice of
files, the verification of every file against the hub's hash (sha256 for LFS files, the git blob sha1 otherwise),
re-fetching a corrupt file, and one-line errors. The token is passed through and never printed or stored by us.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .presets import PresetError, builtin_names, load_preset

COMMERCIAL_NOTICE = ("Stability AI's community licences allow research and non-commercial use; commercial use "
                     "is free only below an annual revenue threshold (US$1M under the Stability AI Community "
                     "License) and needs an enterprise licence above it. Read the LICENSE file kept beside the "
                     "weights, and https://stability.ai/license.")
DIFFUSERS_WEIGHTS = ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "image_encoder/model")
DIFFUSERS_CONFIGS = ("model_index.json", "unet/config.json", "vae/config.json", "image_encoder/config.json",
                     "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json")


class DownloadError(ValueError):
    """A download that cannot go on; one line for the user (never containing the token)."""


@dataclass
class RemoteFile:
    name: str
    size: int | None
    sha256: str | None  # LFS files
    git_sha1: str | None  # the git blob id, for small files


@dataclass
class DownloadResult:
    repo: str
    revision: str
    path: Path  # what --weights takes: the single file or the diffusers folder
    files: list[Path] = field(default_factory=list)
    licence: str | None = None
    licence_files: list[Path] = field(default_factory=list)
    refetched: list[str] = field(default_factory=list)  # files found corrupt and fetched again


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def resolve_model(model: str) -> tuple[str, str | None, bool]:
    """(repo id, preset single file, whether the diffusers folders are this model) for a preset or a repo id."""
    if "/" in model:
        return model, None, True
    try:
        p = load_preset(model)
    except PresetError:
        raise DownloadError(f"unknown model '{model}': a preset ({', '.join(builtin_names())}) or a hub repo id") \
            from None
    if not p.repo:
        raise DownloadError(f"preset {model} names no hub repo")
    return p.repo, p.single_file, p.diffusers


def companions(model: str) -> list[str]:
    """The presets a preset runs with, which its download fetches too (SV4D: the SV3D model of its first frame; a
    U-Net alone: the model whose VAE and image encoder it runs with)."""
    try:
        preset = load_preset(model) if "/" not in model else None
    except PresetError:
        return []
    return [name for name in (preset.companion, preset.base_model) if name] if preset else []


def choose_files(listing: dict[str, RemoteFile], single_file: str | None, layout: str | None,
                 variant: str | None, diffusers_ok: bool = True) -> tuple[list[str], str]:
    """The files to fetch and what --weights will point at ("" = the folder itself). Default: the smallest complete
    set, i.e. the fp16 diffusers files where the repo has them, else the single file."""
    licences = [n for n in listing if "/" not in n and n.upper().startswith(("LICENSE", "LICENCE"))]
    has_diffusers = diffusers_ok and "model_index.json" in listing and all(
        any(n.startswith(stem) and n.endswith(".safetensors") for n in listing) for stem in DIFFUSERS_WEIGHTS)
    if layout is None:
        layout = "diffusers" if has_diffusers else "single"
    if layout == "diffusers":
        if not has_diffusers:
            raise DownloadError("no diffusers folders for this model (the image-decoder and SV3D weights exist only "
                                "as single files); use --layout single")
        variants = [variant] if variant else ["fp16", "fp32"]
        for v in variants:
            suffix = ".fp16.safetensors" if v == "fp16" else ".safetensors"
            weights = [stem + suffix for stem in DIFFUSERS_WEIGHTS]
            if all(w in listing for w in weights):
                return [n for n in DIFFUSERS_CONFIGS if n in listing] + weights + licences, ""
        raise DownloadError(f"this repo has no complete {variant or 'fp16/fp32'} diffusers set")
    if layout != "single":
        raise DownloadError(f"--layout {layout}: choose single or diffusers")
    singles = [n for n in listing if "/" not in n and n.endswith(".safetensors")]
    name = single_file if single_file in listing else (singles[0] if len(singles) == 1 else None)
    if name is None:
        raise DownloadError(f"cannot tell which single file to fetch among {', '.join(singles) or 'none'}")
    if variant == "fp16" and single_file and name != single_file:
        raise DownloadError(f"{name} is not an fp16 file")
    return [name] + licences, name


def file_hash_ok(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256:
        h = hashlib.sha256()
        expected = remote.sha256
    elif remote.git_sha1:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % path.stat().st_size)
        expected = remote.git_sha1
    else:
        return remote.size is None or path.stat().st_size == remote.size
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest() == expected


def _hub_error(e: Exception, repo: str) -> DownloadError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(e, GatedRepoError) or (isinstance(e, HfHubHTTPError) and getattr(e.response, "status_code", 0)
                                         in (401, 403)):
        return DownloadError(f"{repo} is gated: accept its licence at {endpoint()}/{repo} while logged in, then "
                             "log in (hf auth login), set HF_TOKEN or pass --token")
    if isinstance(e, RepositoryNotFoundError):
        return DownloadError(f"{repo}: no such repo on {endpoint()} (or it is private and the token has no access)")
    return DownloadError(f"{repo}: the hub could not be reached or refused the request "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]})")


def download(model: str, *, layout: str | None = None, variant: str | None = None, folder: str | Path | None = None,
             token: str | None = None, revision: str = "main", on_file=None) -> DownloadResult:
    """on_file(name, index, count) before each file."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url

    repo, single, diffusers_ok = resolve_model(model)
    if variant not in (None, "fp16", "fp32"):
        raise DownloadError(f"--variant {variant}: choose fp16 or fp32")
    api = HfApi(endpoint=endpoint(), token=token)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True)
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one line
        raise _hub_error(e, repo) from None
    listing = {s.rfilename: RemoteFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None, s.blob_id)
               for s in info.siblings or []}
    names, target = choose_files(listing, single, layout, variant, diffusers_ok)
    try:  # file access (gated repos refuse it) is checked before anything is fetched or printed
        get_hf_file_metadata(hf_hub_url(repo, names[0], revision=info.sha, endpoint=endpoint()), token=token)
    except Exception as e:  # noqa: BLE001
        raise _hub_error(e, repo) from None
    card = info.card_data.to_dict() if info.card_data else {}
    result = DownloadResult(repo, info.sha, Path(), licence=card.get("license_name") or card.get("license"))
    for i, name in enumerate(names):
        if on_file:
            on_file(name, i, len(names))
        kwargs = dict(repo_id=repo, filename=name, revision=info.sha, token=token, endpoint=endpoint(),
                      local_dir=str(folder) if folder else None)
        try:
            path = Path(hf_hub_download(**kwargs))
            if not file_hash_ok(path, listing[name]):  # corrupt on disk (or in transit): fetch it again
                result.refetched.append(name)
                path.resolve().unlink(missing_ok=True)
                path = Path(hf_hub_download(**kwargs, force_download=True))
                if not file_hash_ok(path, listing[name]):
                    raise DownloadError(f"{repo}/{name}: the downloaded file does not match the hub's hash")
        except DownloadError:
            raise
        except Exception as e:  # noqa: BLE001
            raise _hub_error(e, repo) from None
        result.files.append(path)
        if name.upper().startswith(("LICENSE", "LICENCE")):
            result.licence_files.append(path)
    root = result.files[0].parent if "/" not in names[0] else result.files[0].parent.parent
    result.path = root / target if target else root
    if folder:  # a plain folder has no refs/: record where it came from
        (Path(folder) / ".svd-download.json").write_text(json.dumps(
            {"repo": repo, "revision": info.sha, "files": names, "licence": result.licence}, indent=2) + "\n")
    return result
