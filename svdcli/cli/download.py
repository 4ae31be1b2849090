"""`svd download MODEL` and `svd models`."""

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .app import command, fail, note


def _licence_shown(repo: str) -> bool:
    """Whether the licence notice for repo was printed before (it is printed once per repo)."""
    marker = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "svd" / "licences-shown.json"
    try:
        shown = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        shown = []
    if repo in shown:
        return True
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(shown + [repo]))
    except OSError:
        pass
    return False


@command("run the same command again to resume")
def download(
    model: str = typer.Argument(..., help="A preset (svd, svd-xt, svd-xt-1.1, sv3d-u, sv3d-p, ...) or a hub repo id."),
    layout: str = typer.Option(None, help="single or diffusers (default: the smallest complete set: the fp16 "
                                          "diffusers files where the repo has them)."),
    variant: str = typer.Option(None, help="fp16 or fp32 (diffusers layout)."),
    dir: Path = typer.Option(None, "--dir", help="A plain folder instead of the hub cache (HF_HOME/HF_HUB_CACHE)."),
    token: str = typer.Option(None, help="Hub token (default: HF_TOKEN, or the hub's login). Never printed."),
    as_json: bool = typer.Option(False, "--json", help="One machine-readable result line on stdout per model "
                                                        "fetched."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Download a model's weights (and those it runs with): resumable, each file verified against the hub's hash."""
    from ..checkpoints.download import COMMERCIAL_NOTICE, DownloadError, companions
    from ..checkpoints.download import download as fetch

    def on_file(name, i, n):
        note(f"[{i + 1}/{n}] {name}", quiet or as_json)

    for name in [model, *companions(model)]:
        if name != model:
            note(f"{model} runs with {name}: fetching it too", quiet or as_json)
        try:
            folder = dir if dir is None or name == model else dir / name  # each model's own record in a plain folder
            result = fetch(name, layout=layout, variant=variant, folder=folder, token=token or None, on_file=on_file)
        except DownloadError as e:
            fail(str(e))
        if result.refetched:
            note(f"fetched again (corrupt on disk): {', '.join(result.refetched)}", quiet or as_json)
        if not _licence_shown(result.repo) and not as_json:
            note(f"licence: {result.licence or 'see the LICENSE file'}. {COMMERCIAL_NOTICE}", quiet)
        if as_json:
            sys.stdout.write(json.dumps({"repo": result.repo, "revision": result.revision, "path": str(result.path),
                                         "files": [str(f) for f in result.files], "licence": result.licence,
                                         "refetched": result.refetched}) + "\n")
        else:
            note(f"{result.repo} @ {result.revision[:12]}: {result.path}", quiet)


@command("nothing was written")
def models(as_json: bool = typer.Option(False, "--json", help="One JSON object per preset on stdout.")):
    """List the presets: whether each model is downloaded, where, size on disk and revision."""
    from ..checkpoints.presets import builtin_names, load_preset
    from ..checkpoints.weights import installed

    rows = []
    for name in builtin_names():
        p = load_preset(name)
        rows.append({"preset": name, "repo": p.repo, "description": p.description, **(installed(p) or {}),
                     "downloaded": installed(p) is not None})
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    table = Table()
    for col in ("preset", "downloaded", "size", "revision", "path"):
        table.add_column(col)
    for r in rows:
        missing = f"no: svd download {r['preset']}" if r["repo"] else "no: not in this installation"
        table.add_row(r["preset"], "yes" if r["downloaded"] else missing,
                      f"{r['bytes'] / 1e9:.2f} GB" if r["downloaded"] else "", r.get("revision", "")[:12],
                      r.get("path", ""))
    Console().print(table)
