"""`python -m trainer data ...`: build, tokenize or download data sets.

  data generate [--cache-dir D] [--vocab-size N]            the generated default corpus
  data tokenize INPUT... --out DIR [--tokenizer M] [--vocab-size N] [--val-fraction F] [--prefix P]
  data download --out DIR [--train-shards N] [--variant V] [--repo-id R] [--revision REV] [--endpoint URL]

Each prints a JSON summary and the `data.path=... data.tokenizer=...` overrides that select the result.
Bad input (a missing file, a bad shard or line) prints a message naming it and exits with 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from trainer.data import DataError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise DataError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    from trainer.data import download, generated, tokenize_files

    parser = _Parser(prog="python -m trainer data", description="build, tokenize or download token shards")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="build (or find) the generated corpus in the cache folder")
    gen.add_argument("--cache-dir", default="", help="default: $GPT_SWEEP_CACHE or ~/.cache/gpt-sweep")
    gen.add_argument("--vocab-size", type=int, default=512)
    gen.add_argument("--train-tokens", type=int, default=generated.DEFAULT_TRAIN_TOKENS)
    gen.add_argument("--val-tokens", type=int, default=generated.DEFAULT_VAL_TOKENS)
    gen.add_argument("--seed", type=int, default=0)

    tok = commands.add_parser("tokenize", help="tokenize .txt (one document per file) and .jsonl files")
    tok.add_argument("inputs", nargs="+", metavar="INPUT")
    tok.add_argument("--out", required=True)
    tok.add_argument("--tokenizer", default=None, help="an existing SentencePiece model (default: train one)")
    tok.add_argument("--vocab-size", type=int, default=1024)
    tok.add_argument("--val-fraction", type=float, default=0.01)
    tok.add_argument("--prefix", default="data")
    tok.add_argument("--shard-tokens", type=int, default=tokenize_files.DEFAULT_SHARD_TOKENS)

    dl = commands.add_parser("download", help="fetch the published parameter-golf shards and tokenizer")
    dl.add_argument("--out", required=True)
    dl.add_argument("--train-shards", type=int, default=download.DEFAULT_TRAIN_SHARDS)
    dl.add_argument("--variant", default=download.DEFAULT_VARIANT)
    dl.add_argument("--repo-id", default=download.REPO_ID)
    dl.add_argument("--revision", default=None)
    dl.add_argument("--endpoint", default=None, help="default: $HF_ENDPOINT or the Hugging Face Hub")
    return parser


def _run(args: argparse.Namespace) -> tuple[dict, str, str]:
    if args.command == "generate":
        from trainer.data.generated import ensure_generated_corpus

        corpus = ensure_generated_corpus(args.cache_dir, args.vocab_size, train_tokens=args.train_tokens,
                                         val_tokens=args.val_tokens, seed=args.seed)
        return {"path": str(corpus.path), "tokenizer": str(corpus.tokenizer), **corpus.meta}, \
            str(corpus.path), str(corpus.tokenizer)
    if args.command == "tokenize":
        from trainer.data.tokenize_files import tokenize_files

        summary = tokenize_files(args.inputs, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                                 val_fraction=args.val_fraction, prefix=args.prefix,
                                 shard_tokens=args.shard_tokens)
        return summary, summary["out_dir"], summary["tokenizer"]
    from trainer.data.download import download_golf_data

    summary = download_golf_data(args.out, train_shards=args.train_shards, repo_id=args.repo_id,
                                 revision=args.revision, endpoint=args.endpoint, variant=args.variant)
    return summary, summary["data_path"], summary["tokenizer"]


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
        summary, path, tokenizer = _run(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    print(json.dumps(summary, indent=2))
    print(f"use: data.path={path} data.tokenizer={tokenizer}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
