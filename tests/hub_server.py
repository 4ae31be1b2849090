"""A stand-in for the Hugging Face hub on 127.0.0.1, serving small files with the headers huggingface_hub reads
(X-Repo-Commit, ETag / X-Linked-Etag, X-Linked-Size, Range requests), for download tests."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hub:
    """repos: {repo_id: {filename: bytes}}. Files over `lfs_over` bytes are served as LFS (sha256 etag).
    drop_once: filenames whose first GET is cut off halfway. gated: repos whose files answer 403 GatedRepo."""

    def __init__(self, repos: dict[str, dict[str, bytes]], lfs_over: int = 64, license_name: str = "svd-community"):
        self.repos, self.lfs_over, self.license_name = repos, lfs_over, license_name
        self.drop_once: set[str] = set()
        self.gated: set[str] = set()
        self.authorizations: list[str] = []
        self.range_requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def _etag(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if len(data) > self.lfs_over else git_sha1(data)

    def handle(self, h, head: bool):
        self.authorizations.append(h.headers.get("Authorization", ""))
        path = urlparse(h.path).path
        if path.startswith("/api/models/"):
            return self.api(h, path[len("/api/models/"):])
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self.reply(h, 404, b"not found")
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        files = self.repos.get(repo)
        if files is None:
            return self.reply(h, 404, b"", {"X-Error-Code": "RepoNotFound"})
        if repo in self.gated:
            return self.reply(h, 403, b"gated", {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
        if filename not in files:
            return self.reply(h, 404, b"", {"X-Error-Code": "EntryNotFound"})
        data = files[filename]
        etag = self._etag(data)
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if len(data) > self.lfs_over:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        start, status = 0, 200
        if (rng := h.headers.get("Range")) and not head:
            self.range_requests.append(f"{filename}:{rng}")
            start = int(rng.split("=")[1].split("-")[0])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if head:
            return self.reply(h, 200, b"", {**headers, "Content-Length": str(len(data))}, send_body=False)
        if filename in self.drop_once and status == 200:
            self.drop_once.discard(filename)
            h.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # cut the connection mid-file
            return
        self.reply(h, status, body, headers)

    def api(self, h, rest: str):
        repo = "/".join(rest.split("/")[:2])
        files = self.repos.get(repo)
        if files is None:
            return self.reply(h, 404, b"{}", {"X-Error-Code": "RepoNotFound"})
        siblings = []
        for name, data in files.items():
            s = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
            if len(data) > self.lfs_over:
                s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(s)
        body = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT, "siblings": siblings,
                           "gated": "manual" if repo in self.gated else False,
                           "cardData": {"license": "other", "license_name": self.license_name}}).encode()
        self.reply(h, 200, body, {"Content-Type": "application/json"})

    def reply(self, h, status: int, body: bytes, headers: dict | None = None, send_body: bool = True):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if send_body and body:
            h.wfile.write(body)
