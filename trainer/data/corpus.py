"""A generated English-like corpus whose entropy is known exactly.

Text comes from a first-order Markov chain over symbols: a few hundred pronounceable lowercase words plus
"," and ".". Each word has a handful of likely successors (weighted towards frequent words, so word
frequencies come out Zipf-like) and its own chance of a comma or a sentence end; after a comma comes any
word by its Zipf weight; after a period the document ends with probability `doc_end`, otherwise a new
sentence starts with one of a few "starter" words. Sentence-initial words are capitalised, punctuation
sticks to the word before it and everything else is separated by single spaces, so a document's text is
an invertible function of its symbol sequence (see `parse`). Because the process is known, so is
  * its entropy rate per byte (`entropy_rate_bpb`): bits per symbol over bytes per symbol at the
    stationary distribution;
  * the exact negative log-likelihood of any text it produced (`nll_bits`): the floor for val_bpb.
A document boundary costs information (end or go on) but no bytes, exactly as a BOS token does under
the parameter-golf byte accounting.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterator

import numpy as np

# Bump when anything below changes the generated text: cached corpora are keyed by it.
GENERATOR_VERSION = "markov-words-1"

_ONSETS = ("b c d f g h j k l m n p r s t v w z ch sh th bl br cl cr dr fl fr gl gr pl pr sl sp st tr").split()
_NUCLEI = ("a e i o u a e i o u ai ea ee oa ou io").split()  # plain vowels twice: twice as likely
_CODAS = ("", "", "", "", "n", "r", "s", "l", "m", "t", "nd", "st", "ng", "rk")


def _make_words(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct pronounceable words; like natural languages, frequent (low-rank) words are shorter."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        rank = len(words)
        syllables = 1 if rank < 24 else int(rng.integers(1, 3)) if rank < 120 else int(rng.integers(2, 4))
        word = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))]
                       for _ in range(syllables))
        word += _CODAS[rng.integers(len(_CODAS))]
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


@dataclass(frozen=True, eq=False)
class WordChain:
    """The generating process. Symbols 0..n-1 are words, n is ",", n+1 is "."."""

    words: tuple[str, ...]
    transition: np.ndarray   # (n+2, n+2); the "." row is the sentence-start distribution
    doc_end: float           # probability that a document ends after a "."

    @classmethod
    def build(cls, seed: int = 0, num_words: int = 300, successors: tuple[int, int] = (3, 8),
              starters: int = 40, zipf_exponent: float = 1.05, doc_end: float = 0.1) -> "WordChain":
        rng = np.random.default_rng([seed, 0])
        words = _make_words(rng, num_words)
        n = num_words
        zipf = 1.0 / (np.arange(n) + 2.7) ** zipf_exponent
        zipf /= zipf.sum()
        comma, period = n, n + 1
        transition = np.zeros((n + 2, n + 2))
        for w in range(n):
            k = int(rng.integers(successors[0], successors[1] + 1))
            nxt = rng.choice(n, size=k, replace=False, p=zipf)
            weights = rng.dirichlet(np.ones(k))
            p_comma = rng.uniform(0.0, 0.1)
            p_period = rng.uniform(0.04, 0.18)
            transition[w, nxt] = weights * (1.0 - p_comma - p_period)
            transition[w, comma] = p_comma
            transition[w, period] = p_period
        transition[comma, :n] = zipf
        start_ids = rng.choice(min(n, 4 * starters), size=starters, replace=False)
        start = 1.0 / (np.arange(starters) + 1.0)
        transition[period, start_ids] = start / start.sum()
        return cls(tuple(words), transition, doc_end)

    @property
    def comma(self) -> int:
        return len(self.words)

    @property
    def period(self) -> int:
        return len(self.words) + 1

    # -- exact information content ------------------------------------------------------------------

    def stationary(self, tol: float = 1e-15, max_iter: int = 100_000) -> np.ndarray:
        """Stationary distribution of the symbol chain, by power iteration."""
        pi = np.full(len(self.transition), 1.0 / len(self.transition))
        for _ in range(max_iter):
            nxt = pi @ self.transition
            nxt /= nxt.sum()
            if np.abs(nxt - pi).max() < tol:
                return nxt
            pi = nxt
        raise RuntimeError("power iteration did not converge")

    def symbol_bytes(self) -> np.ndarray:
        """Bytes each symbol adds to the text: a word brings its separating space, punctuation 1."""
        return np.array([len(w) + 1 for w in self.words] + [1, 1], dtype=np.float64)

    def entropy_rate_bpb(self) -> float:
        """Entropy rate of the text in bits per byte (documents concatenated forever)."""
        pi = self.stationary()
        e = self.doc_end
        h = np.array([_entropy_bits(row) for row in self.transition])
        h[self.period] += _entropy_bits(np.array([e, 1.0 - e]))
        # a document's first word has no space before it
        mean_bytes = float(pi @ self.symbol_bytes()) - pi[self.period] * e
        return float(pi @ h) / mean_bytes

    def log2_transition(self) -> np.ndarray:
        """log2 P(next | previous) inside a document (after "." that includes "the document goes on")."""
        with np.errstate(divide="ignore"):
            lt = np.log2(self.transition)
            lt[self.period] += math.log2(1.0 - self.doc_end)
        return lt

    def nll_bits(self, symbols, ends: bool) -> float:
        """-log2 P(document) under the process; `ends` adds the cost of the document ending (the next
        BOS), which is paid by every document that another one follows."""
        s = np.asarray(symbols)
        if s.size == 0 or s[-1] != self.period:
            raise ValueError("a document is a non-empty symbol sequence ending with a period")
        lt = self.log2_transition()
        bits = -math.log2(self.transition[self.period, s[0]]) - float(lt[s[:-1], s[1:]].sum())
        if ends:
            bits -= math.log2(self.doc_end)
        if not math.isfinite(bits):
            raise ValueError("the sequence has probability zero under this process")
        return bits

    # -- sampling and text ------------------------------------------------------------------------

    def documents(self, rng: np.random.Generator) -> Iterator[list[int]]:
        """An endless stream of documents (symbol lists), each drawn afresh from the start distribution."""
        outcomes = [np.flatnonzero(row).tolist() for row in self.transition]
        cumulative = [list(accumulate(self.transition[s, o].tolist())) for s, o in enumerate(outcomes)]
        for c in cumulative:
            c[-1] = float("inf")  # rounding must never let a draw fall off the end
        period, doc_end = self.period, self.doc_end
        uniforms: list[float] = []
        i = 0
        while True:
            doc: list[int] = []
            state = period
            while True:
                if i + 2 > len(uniforms):
                    uniforms, i = rng.random(1 << 16).tolist(), 0
                state = outcomes[state][bisect_right(cumulative[state], uniforms[i])]
                i += 1
                doc.append(state)
                if state == period:
                    if uniforms[i] < doc_end:
                        i += 1
                        break
                    i += 1
            yield doc

    def render(self, symbols) -> str:
        words, comma, period = self.words, self.comma, self.period
        parts: list[str] = []
        prev = period
        for s in symbols:
            if s == comma:
                parts.append(",")
            elif s == period:
                parts.append(".")
            else:
                word = words[s].capitalize() if prev == period else words[s]
                parts.append(word if not parts else " " + word)
            prev = s
        return "".join(parts)

    def parse(self, text: str) -> list[int]:
        """Inverse of `render`: the symbol sequence of a document's text."""
        index = {w: i for i, w in enumerate(self.words)}
        symbols: list[int] = []
        prev = self.period
        for chunk in text.split(" "):
            punct = chunk[-1:] if chunk[-1:] in (",", ".") else ""
            word = chunk[:len(chunk) - len(punct)]
            expected = index.get(word.lower(), -1)
            if expected < 0 or word != (self.words[expected].capitalize() if prev == self.period
                                        else self.words[expected]):
                raise ValueError(f"{chunk!r} is not a word of this corpus in this position")
            symbols.append(expected)
            if punct:
                symbols.append(self.comma if punct == "," else self.period)
            prev = symbols[-1]
        return symbols
