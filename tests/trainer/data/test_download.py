"""`data download` against a local fake of the Hub: a server on 127.0.0.1 answering the Hub's
`resolve` endpoint (HEAD for metadata, GET for content) for the published parameter-golf layout."""
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from paths import REPO

from trainer.data import DataError
from trainer.data.cli import main
from trainer.data.corpus import WordChain
from trainer.data.download import DownloadError, download_golf_data
from trainer.data.shards import ShardError, read_shard, write_shard
from trainer.data.tokenizer import load_tokenizer, train_tokenizer

REPO_ID = "someone/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATASET = "datasets/datasets/fineweb10B_sp1024"


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.refuse_with: int | None = None  # answer every request with this HTTP status
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool):
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                data = None
                for rev in ("main", COMMIT):
                    prefix = f"/datasets/{REPO_ID}/resolve/{rev}/"
                    if path.startswith(prefix):
                        data = hub.files.get(path[len(prefix):])
                if hub.refuse_with:
                    self.send_response(hub.refuse_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200 if data is not None else 404)
                self.send_header("X-Repo-Commit", COMMIT)
                if data is None:
                    self.send_header("X-Error-Code", "EntryNotFound")
                    data = b""
                else:
                    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def fetched(self) -> list[str]:
        return sorted({p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.requests if m == "GET"})


@pytest.fixture(scope="module")
def remote_files(tmp_path_factory):
    """The published layout in miniature: 1 val and 3 train shards, a tokenizer, the manifest."""
    work = tmp_path_factory.mktemp("remote")
    chain = WordChain.build(seed=6)
    stream = chain.documents(np.random.default_rng(0))
    model = train_tokenizer([chain.render(next(stream)) for _ in range(300)], work / "fineweb_1024_bpe", 400)
    files = {
        "datasets/tokenizers/fineweb_1024_bpe.model": model.read_bytes(),
        "datasets/tokenizers/fineweb_1024_bpe.vocab": model.with_suffix(".vocab").read_bytes(),
    }
    rng = np.random.default_rng(1)
    for name in ["fineweb_val_000000", "fineweb_train_000000", "fineweb_train_000001", "fineweb_train_000002"]:
        path = write_shard(work / f"{name}.bin", rng.integers(0, 400, size=int(rng.integers(500, 900))))
        files[f"{DATASET}/{name}.bin"] = path.read_bytes()
    files["datasets/manifest.json"] = json.dumps({
        "version": "test",
        "datasets": [
            {"name": "fineweb10B_byte260", "tokenizer_name": "pure_byte_260", "stats": {"files_train": 1, "files_val": 1}},
            {"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024", "vocab_size": 1024,
             "stats": {"files_train": 3, "files_val": 1, "tokens_train": 2000, "tokens_val": 700}},
        ],
        "tokenizers": [
            {"name": "pure_byte_260", "kind": "byte", "path": "tokenizers/fineweb_pure_byte_260.json"},
            {"name": "sp_bpe_1024", "kind": "sentencepiece_bpe", "vocab_size": 1024,
             "model_path": "tokenizers/fineweb_1024_bpe.model", "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"},
        ],
    }).encode()
    return files


@pytest.fixture
def hub(remote_files):
    server = FakeHub(dict(remote_files))
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
    server.thread.join()


@pytest.fixture
def online(monkeypatch):
    """In-process calls: the Hub client must not be in offline mode (whatever the environment says)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_cli_download_into_the_upstream_layout(tmp_path, hub, remote_files):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO))
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "trainer.data.cli", "download", "--out", str(out), "--train-shards", "2",
           "--repo-id", REPO_ID, "--endpoint", hub.url]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout[:run.stdout.rindex("}") + 1])
    data = out / "datasets" / "fineweb10B_sp1024"
    tokenizer = out / "tokenizers" / "fineweb_1024_bpe.model"
    assert summary["data_path"] == str(data) and summary["tokenizer"] == str(tokenizer)
    assert f"data.path={data} data.tokenizer={tokenizer}" in run.stdout
    assert sorted(p.name for p in data.iterdir()) == [
        "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    for p in data.iterdir():
        assert p.read_bytes() == remote_files[f"{DATASET}/{p.name}"]
        read_shard(p)
    assert load_tokenizer(tokenizer).vocab_size() == 400
    assert (out / "tokenizers" / "fineweb_1024_bpe.vocab").is_file()
    assert json.loads((out / "manifest.json").read_text())["version"] == "test"
    assert not (out / ".download").exists()
    assert hub.fetched() == sorted(["datasets/manifest.json", "datasets/tokenizers/fineweb_1024_bpe.model",
                                    "datasets/tokenizers/fineweb_1024_bpe.vocab",
                                    f"{DATASET}/fineweb_val_000000.bin", f"{DATASET}/fineweb_train_000000.bin",
                                    f"{DATASET}/fineweb_train_000001.bin"])
    # a second run keeps what is there and fetches only what is new
    hub.requests.clear()
    run = subprocess.run(cmd[:-5] + ["3"] + cmd[-4:], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert hub.fetched() == [f"{DATASET}/fineweb_train_000002.bin"]
    summary = json.loads(run.stdout[:run.stdout.rindex("}") + 1])
    assert (summary["downloaded"], summary["kept"]) == (1, 6)


def test_too_many_train_shards_fails_before_any_shard(tmp_path, hub, online):
    with pytest.raises(DataError, match="fineweb10B_sp1024 has 3 train shards .* asked for 5"):
        download_golf_data(tmp_path, train_shards=5, repo_id=REPO_ID, endpoint=hub.url)
    assert hub.fetched() == ["datasets/manifest.json"]


def test_unknown_variant_lists_what_the_manifest_has(tmp_path, hub, online):
    with pytest.raises(DownloadError, match="fineweb10B_sp4096.*fineweb10B_byte260, fineweb10B_sp1024"):
        download_golf_data(tmp_path, train_shards=1, repo_id=REPO_ID, endpoint=hub.url, variant="sp4096")


def test_corrupt_shard_is_named_and_not_kept(tmp_path, hub, online):
    name = f"{DATASET}/fineweb_train_000000.bin"
    hub.files[name] = hub.files[name][:-3]
    with pytest.raises(ShardError) as e:
        download_golf_data(tmp_path, train_shards=1, repo_id=REPO_ID, endpoint=hub.url)
    local = tmp_path / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin"
    assert str(local) in str(e.value) and "does not match" in str(e.value)
    assert not local.exists()
    assert not list((tmp_path / ".download").rglob("fineweb_train_000000.bin"))


def test_cli_bad_shard_exits_2_naming_it(tmp_path, hub, online, capsys):
    name = f"{DATASET}/fineweb_val_000000.bin"
    hub.files[name] = hub.files[name].replace(b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", 1)  # version 2
    code = main(["download", "--out", str(tmp_path), "--train-shards", "1", "--repo-id", REPO_ID,
                 "--endpoint", hub.url])
    assert code == 2
    err = capsys.readouterr().err
    assert "fineweb_val_000000.bin" in err and "unsupported shard version 2" in err
    assert main(["download", "--out", str(tmp_path), "--train-shards", "-1"]) == 2
    assert "train_shards must be >= 0" in capsys.readouterr().err


def test_missing_remote_file_is_named(tmp_path, hub, online):
    del hub.files[f"{DATASET}/fineweb_train_000001.bin"]
    with pytest.raises(DownloadError, match="fineweb_train_000001.bin: no such file in someone/parameter-golf"):
        download_golf_data(tmp_path, train_shards=2, repo_id=REPO_ID, endpoint=hub.url)


def test_refused_download_is_named(tmp_path, hub, online):
    hub.refuse_with = 403
    with pytest.raises(DownloadError, match=r"datasets/manifest.json: download from someone/parameter-golf "
                                            r"\(http://127.0.0.1:\d+\) failed: 403"):
        download_golf_data(tmp_path, train_shards=1, repo_id=REPO_ID, endpoint=hub.url)
