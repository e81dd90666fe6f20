"""Token data for the trainer: the shard format, distributed loading, tokenizers and byte accounting,
the generated default corpus, and the `data` command that builds or fetches real data.

Submodules are imported where they are used, so importing the trainer stays cheap.
"""


class DataError(ValueError):
    """Bad data input (a file, a shard, a document). The message names what is wrong and where."""
