"""Fetch the published parameter-golf FineWeb shards and tokenizer from the Hugging Face Hub.

The published export is a dataset repository whose `datasets/` folder holds `manifest.json`,
`datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin` and `tokenizers/...`; the manifest
names each dataset's shard counts and tokenizer files. As in the challenge's own downloader, all
validation shards and the first `train_shards` train shards (a prefix of the same frozen shuffled
export) are fetched, into `out_dir/datasets/<dataset>/` and `out_dir/tokenizers/`. Files already present
and valid are kept, so an interrupted download can simply be run again.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from trainer.data import DataError
from trainer.data.shards import ShardError, shard_token_count

REPO_ID = "willdepueoai/parameter-golf"
REMOTE_ROOT = "datasets"
DEFAULT_VARIANT = "sp1024"
DEFAULT_TRAIN_SHARDS = 80  # 8B tokens, what the challenge's records train on
STAGING = ".download"


class DownloadError(DataError):
    pass


def download_golf_data(out_dir: str | os.PathLike, train_shards: int = DEFAULT_TRAIN_SHARDS,
                       repo_id: str = REPO_ID, revision: str | None = None, endpoint: str | None = None,
                       variant: str = DEFAULT_VARIANT) -> dict:
    """Download one tokenizer variant's val shards, `train_shards` train shards and tokenizer files.

    Returns a summary with `data_path` and `tokenizer` (what `data.path` / `data.tokenizer` should be).
    """
    if train_shards < 0:
        raise DataError(f"train_shards must be >= 0, got {train_shards}")
    out = Path(out_dir)
    fetcher = _Fetcher(out, repo_id, revision, endpoint)
    manifest_file = fetcher.get(f"{REMOTE_ROOT}/manifest.json")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        manifest_file.unlink()
        raise DownloadError(f"{manifest_file}: the downloaded manifest is not valid JSON ({e})") from None

    dataset_name = f"fineweb10B_{variant}"
    dataset = _entry(manifest, "datasets", dataset_name, manifest_file)
    stats = dataset.get("stats") or {}
    try:
        files_train, files_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise DownloadError(f"{manifest_file}: dataset {dataset_name} has no files_train/files_val counts") from None
    if train_shards > files_train:
        raise DataError(f"{dataset_name} has {files_train} train shards on {repo_id}, asked for {train_shards}")
    tokenizer = _entry(manifest, "tokenizers", dataset.get("tokenizer_name"), manifest_file)
    artifacts = [str(tokenizer[k]) for k in ("model_path", "vocab_path", "path") if tokenizer.get(k)]
    model_files = [a for a in artifacts if a.endswith(".model")]
    if not model_files:
        raise DownloadError(f"{manifest_file}: tokenizer {tokenizer.get('name')} lists no .model file")

    prefix = f"{REMOTE_ROOT}/datasets/{dataset_name}"
    shards = [f"{prefix}/fineweb_val_{i:06d}.bin" for i in range(files_val)]
    shards += [f"{prefix}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    for remote in shards:
        fetcher.get(remote, check=shard_token_count)
    for artifact in artifacts:
        fetcher.get(f"{REMOTE_ROOT}/{artifact}")
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return {
        "repo_id": repo_id,
        "dataset": dataset_name,
        "data_path": str(out / "datasets" / dataset_name),
        "tokenizer": str(fetcher.local_path(f"{REMOTE_ROOT}/{model_files[0]}")),
        "train_shards": train_shards,
        "val_shards": files_val,
        "downloaded": fetcher.downloaded,
        "kept": fetcher.kept,
    }


def _entry(manifest: dict, section: str, name, manifest_file: Path) -> dict:
    entries = manifest.get(section) if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"{manifest_file}: no {section} list in the manifest")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    known = ", ".join(str(e.get("name")) for e in entries if isinstance(e, dict))
    raise DownloadError(f"{manifest_file}: no {section[:-1]} named {name!r} (the manifest has: {known})")


class _Fetcher:
    def __init__(self, out: Path, repo_id: str, revision: str | None, endpoint: str | None):
        self.out, self.repo_id, self.revision, self.endpoint = out, repo_id, revision, endpoint
        self.downloaded = 0
        self.kept = 0

    def local_path(self, remote: str) -> Path:
        """Where a remote file lands: the export's root folder maps onto `out`."""
        parts = Path(remote).parts
        return self.out.joinpath(*parts[1:] if parts[:1] == (REMOTE_ROOT,) else parts)

    def get(self, remote: str, check=None) -> Path:
        dest = self.local_path(remote)
        if dest.is_file():
            try:
                if check:
                    check(dest)
                self.kept += 1
                return dest
            except ShardError:
                dest.unlink()
        # hf_hub_download writes the repo's folder structure under local_dir; staging inside `out` keeps
        # the final move a rename on the same file system
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RemoteEntryNotFoundError

        where = f"{self.repo_id} ({self.endpoint or 'the Hugging Face Hub'})"
        try:
            staged = Path(hf_hub_download(self.repo_id, remote, repo_type="dataset", revision=self.revision,
                                          local_dir=self.out / STAGING, endpoint=self.endpoint))
        except RemoteEntryNotFoundError:
            raise DownloadError(f"{remote}: no such file in {where}") from None
        except (OSError, EntryNotFoundError, HFValidationError) as e:  # unreachable (after retries), refused...
            # the client reports "not in the local cache" and keeps the server's answer as the cause
            cause = e.__cause__ or e
            raise DownloadError(f"{remote}: download from {where} failed: {cause}") from None
        if check:
            try:
                check(staged)
            except ShardError as e:
                staged.unlink()
                raise ShardError(dest, f"downloaded from {where} but invalid: {e.problem}") from None
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
        self.downloaded += 1
        return dest
