"""The shop's own past replies: an index over (context → agent reply) pairs of the prepared logs.

One entry per agent turn that answers a customer turn. An entry is keyed on the customer message just before the
reply (weight 1) plus a little earlier context (the ``context_turns`` messages before that one, weight
``context_weight``), and searched with Okapi BM25 over **character bigrams** of Chinese shop text (plus single
characters for one-character runs, and placeholders such as ``[订单x]`` as one token each).

Why bigrams: on held-out JDDC sessions (80/20 split by session, seed 0; 1,287 held-out agent turns, 4,742 indexed
pairs) the best match's reply scores BLEU-4 7.09 / ROUGE-L 17.69 against the real agent reply with bigrams, 6.77 /
17.37 with jieba words and 6.78 / 17.74 with both, and bigrams search 3x faster (0.4 ms against 1.3 ms: no jieba cut
per query). On the bundled sample shop (templated text, 5 seeds) words lead slightly (BLEU-4 56.6 against 55.6), within
the spread of the seeds. Customer text is short, colloquial and misspelt (啥时候发, 亲 能便宜点不); jieba cuts such
text inconsistently while bigrams match any two shared characters. Earlier context at weight 0.3 (two messages)
beats none (JDDC 6.32 BLEU-4 with the last message alone), 0.1-0.2, 0.5 or four messages. ``tokens="words"`` and
``tokens="both"`` remain available.

Replies are stored exactly as the prepared data has them (JDDC's ``!@@@!`` messages are joined by a space, as
``kefu prepare`` does); slots and placeholders (``[订单x]``, ``[金额x]``, ``[到手价]``) are kept, to be filled later by
:func:`kefu.kg.slots.fill_slots` from the request's facts.

**Consensus** (:meth:`ReplyIndex.consensus`): of the ``k`` best distinct past replies, the one that agrees most with
the others (character n-gram overlap, :func:`agreement`) — what the shop's agents *usually* say in this situation, not
what one agent once said. This is minimum-Bayes-risk selection with the retrieved replies as both hypotheses and
evidence. Only past replies whose asked message is somewhat alike vote (similarity ≥ 0.1): with no floor, a question
the logs never saw (你们卖无人机吗, best similarity 0.03) got the reply twenty unrelated ones share. On held-out JDDC
sessions (``kefu prepare --test-ratio 0.2``, 211 last turns) the most agreed of 20 scores BLEU-4 20.9 / ROUGE-L 36.3
(24.4 / 40.4 with no floor) against 10.2 / 23.2 for the best match alone.

``similarity`` of a match is a number in [0, 1] meant as a confidence threshold: the cosine between the idf-weighted
term vectors of the asked customer message and of the entry's customer message (1.0 for the same words; a term the
logs never saw counts with the highest idf, so a question about something new scores low).

The index is a term-major CSR matrix of precomputed BM25 weights in numpy arrays: a search gathers the postings of
the query's terms and sums them with one ``bincount``. Saved as one ``.npz`` (arrays plus one JSON member; loaded with
``allow_pickle=False``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from kefu.artifacts.dialogues import PreparedLine, read_dialogues
from kefu.kg.slots import states_figures
from kefu.types import Dialogue, KefuError

FORMAT = "kefu-replies/1"
TOKEN_MODES = ("bigrams", "words", "both")
MSG_SEP = "!@@@!"  # JDDC: one agent turn made of several messages (kefu prepare joins them with a space)
PLACEHOLDER = re.compile(r"\[[^\[\]\s]{1,12}\]")
RUN = re.compile(r"[0-9a-z\u3400-\u9fff\uf900-\ufaff]+")
WORD = re.compile(r"\w", re.UNICODE)
WORD_CHARS = re.compile(r"[^\W_]+")  # letters, digits, CJK: what agreement compares (spacing and punctuation aside)
CONSENSUS_K = 20  # past replies that vote (kefu.serve.config: serve.consensus_k)
CONSENSUS_MIN_SIMILARITY = 0.1  # a vote needs an asked message at least this alike (serve.consensus_min_similarity)
# below this agreement the agents did not say one thing there, and a tuned model does better (serve.
# consensus_min_agreement; chosen on JDDC's validation split: on its 17 last turns below 0.15 the model scored BLEU-4
# 9.3 / ROUGE-L 21.0 against 3.6 / 12.6 for the consensus; above it the consensus led in every band)
CONSENSUS_MIN_AGREEMENT = 0.15
BIGRAM = "\u00b7"  # prefix: bigrams and words live in separate namespaces when both are used


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def normalize(text: str) -> str:
    """NFKC (full-width → half-width) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str, tokens: str = "bigrams") -> list[str]:
    """Index terms of ``text``: placeholders whole, then character bigrams of each run of letters/digits/CJK (a
    one-character run is itself), and/or jieba words (punctuation and spaces dropped)."""
    if tokens not in TOKEN_MODES:
        raise KefuError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")
    text = normalize(text)
    out = PLACEHOLDER.findall(text)
    rest = PLACEHOLDER.sub(" ", text)
    if tokens in ("bigrams", "both"):
        prefix = BIGRAM if tokens == "both" else ""
        for run in RUN.findall(rest):
            if len(run) == 1:
                out.append(prefix + run)
            else:
                out.extend(prefix + run[i:i + 2] for i in range(len(run) - 1))
    if tokens in ("words", "both"):
        out.extend(w for w in _jieba().lcut(rest) if WORD.search(w))
    return out


@dataclass(slots=True)
class ReplyMatch:
    """One past reply found for a question."""

    score: float  # BM25 score (unbounded; compare within one index)
    similarity: float  # [0, 1]: idf-weighted cosine of the asked and the answered customer message
    reply: str  # the agent's reply as the data has it, placeholders kept
    question: str  # the customer message it answered
    context: list[dict[str, str]]  # the earlier messages the entry was keyed on (oldest first)
    dialogue_id: str
    turn: int  # index of the reply in its dialogue's messages

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "similarity": self.similarity, "reply": self.reply, "question": self.question,
                "context": self.context, "dialogue_id": self.dialogue_id, "turn": self.turn}


@dataclass(slots=True)
class Candidate:
    """One past reply ranked by :func:`by_agreement`."""

    match: ReplyMatch
    agreement: float  # [0, 1]: its mean agreement with the other candidates (0 when it stands alone)

    @property
    def text(self) -> str:
        return self.match.reply


def agreement(texts: Sequence[str], n: int = 4) -> np.ndarray:
    """Pairwise agreement of ``texts`` as a symmetric matrix in [0, 1]: the mean over orders 1..``n`` of the F1 (Dice)
    of the two texts' sets of character n-grams over their letters, digits and CJK (NFKC, lower case; spacing and
    punctuation aside) — the overlap that character BLEU and chrF reward, symmetric and cheap (one product per
    order). The diagonal is 1 for a non-empty text."""
    grams: list[list[set[str]]] = []
    for text in texts:
        t = "".join(WORD_CHARS.findall(normalize(text)))
        grams.append([{t[i:i + order] for i in range(len(t) - order + 1)} for order in range(1, n + 1)])
    m = len(texts)
    total = np.zeros((m, m), dtype=np.float64)
    for order in range(n):
        vocab: dict[str, int] = {}
        rows = [[vocab.setdefault(g, len(vocab)) for g in per[order]] for per in grams]
        if not vocab:
            continue
        x = np.zeros((m, len(vocab)), dtype=np.float32)
        for i, cols in enumerate(rows):
            x[i, cols] = 1.0
        shared = x @ x.T
        size = x.sum(axis=1)
        denom = size[:, None] + size[None, :]
        total += np.divide(2.0 * shared, denom, out=np.zeros_like(total), where=denom > 0)
    return total / n


def by_agreement(matches: Sequence[ReplyMatch], min_similarity: float = CONSENSUS_MIN_SIMILARITY) -> list[Candidate]:
    """``matches`` (distinct past replies, best first) whose asked message is at least ``min_similarity`` alike (the
    situation is the same, not only a word), ranked by their mean :func:`agreement` with the others, most agreed
    first (ties: the better match). Empty when none qualifies. See the module docstring for why and for the
    figures."""
    voters = [m for m in matches if m.similarity >= min_similarity]
    if len(voters) <= 1:
        return [Candidate(m, 0.0) for m in voters]
    matrix = agreement([m.reply for m in voters])
    np.fill_diagonal(matrix, 0.0)
    mean = matrix.sum(axis=1) / (len(voters) - 1)
    order = sorted(range(len(voters)), key=lambda i: (-round(float(mean[i]), 9), i))
    return [Candidate(voters[i], round(float(mean[i]), 6)) for i in order]


@dataclass(slots=True)
class _Entry:
    reply: str
    question: str
    context: list[dict[str, str]]
    dialogue_id: str
    turn: int


def _dialogues(items: Iterable[Dialogue | PreparedLine | dict]) -> Iterable[Dialogue]:
    for item in items:
        if isinstance(item, PreparedLine):
            yield item.dialogue
        elif isinstance(item, Dialogue):
            yield item
        elif isinstance(item, dict):
            yield Dialogue.from_dict(item)
        else:
            raise KefuError(f"ReplyIndex.build: expected Dialogue, PreparedLine or dict, got {type(item).__name__}")


def _reply_text(text: str) -> str:
    return " ".join(m.strip() for m in text.split(MSG_SEP) if m.strip()) if MSG_SEP in text else text.strip()


def _entries(dialogue: Dialogue, context_turns: int) -> Iterable[_Entry]:
    messages = [m for m in dialogue.messages if m.role != "system"]
    for k, m in enumerate(messages):
        if m.role != "assistant" or k == 0 or messages[k - 1].role != "user":
            continue
        reply = _reply_text(m.content)
        question = messages[k - 1].content.strip()
        if not reply or not question:
            continue
        start = max(0, k - 1 - context_turns)
        context = [{"role": t.role, "content": t.content} for t in messages[start:k - 1]]
        yield _Entry(reply, question, context, dialogue.id, k)


def _split_query(messages: Sequence[dict], context_turns: int) -> tuple[str, list[str]]:
    """(the last customer message, the ``context_turns`` messages before it) of a conversation so far."""
    msgs = [m for m in messages if m.get("role") != "system"]
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
    if last is None:
        return "", []
    return str(msgs[last].get("content") or ""), [str(m.get("content") or "")
                                                  for m in msgs[max(0, last - context_turns):last]]


class ReplyIndex:
    """BM25 over (context → agent reply) pairs. Build with :meth:`build`, query with :meth:`search`."""

    def __init__(self, *, entries: list[_Entry], vocab: list[str], idf: np.ndarray, indptr: np.ndarray,
                 docs: np.ndarray, weights: np.ndarray, qptr: np.ndarray, qterms: np.ndarray, qweights: np.ndarray,
                 params: dict[str, Any]):
        self.entries = entries
        self.vocab = vocab
        self.term_id = {t: i for i, t in enumerate(vocab)}
        self.idf = idf
        self.indptr, self.docs, self.weights = indptr, docs, weights  # term-major BM25 weights
        self.qptr, self.qterms, self.qweights = qptr, qterms, qweights  # doc-major unit tf-idf of the question
        self.params = params
        self.tokens: str = params["tokens"]
        self.context_turns: int = params["context_turns"]
        self.context_weight: float = params["context_weight"]
        distinct: dict[str, int] = {}
        self.reply_ids = np.asarray([distinct.setdefault(e.reply, len(distinct)) for e in entries], dtype=np.int64)
        n = len(entries)
        self._by_dialogue: dict[str, list[int]] | None = None
        self.max_idf = float(math.log(1 + (n + 0.5) / 0.5)) if n else 1.0

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ReplyIndex({len(self)} replies, {len(self.vocab)} terms, tokens={self.tokens!r})"

    # ------------------------------------------------------------------------------------------------ build
    @classmethod
    def build(cls, dialogues: Iterable[Dialogue | PreparedLine | dict], *, tokens: str = "bigrams",
              context_turns: int = 2, context_weight: float = 0.3, k1: float = 1.2, b: float = 0.75,
              include_simulated: bool = False) -> ReplyIndex:
        """Index every agent turn that answers a customer turn. ``context_turns`` earlier messages (before the
        customer message) count with ``context_weight``. Tier-3 dialogues (simulated/adversarial, ``meta.tier`` 3)
        are skipped unless ``include_simulated``: they are not the shop's own replies."""
        if tokens not in TOKEN_MODES:
            raise KefuError(f"tokens must be one of {', '.join(TOKEN_MODES)}, got {tokens!r}")
        entries: list[_Entry] = []
        for dialogue in _dialogues(dialogues):
            if not include_simulated and dialogue.meta.get("tier") == 3:
                continue
            entries.extend(_entries(dialogue, context_turns))
        vocab: dict[str, int] = {}
        rows, cols, tfs, lengths = [], [], [], []
        q_rows, q_cols, q_tfs = [], [], []
        for d, entry in enumerate(entries):
            tf: Counter = Counter()
            q = Counter(tokenize(entry.question, tokens))
            for term, count in q.items():
                tf[term] += count
            for message in entry.context:
                for term in tokenize(message["content"], tokens):
                    tf[term] += context_weight
            for term, value in tf.items():
                rows.append(vocab.setdefault(term, len(vocab)))
                cols.append(d)
                tfs.append(value)
            for term, count in q.items():
                q_rows.append(d)
                q_cols.append(vocab[term])
                q_tfs.append(count)
            lengths.append(sum(tf.values()))
        n, n_terms = len(entries), len(vocab)
        term = np.asarray(rows, dtype=np.int64)
        doc = np.asarray(cols, dtype=np.int64)
        tf_arr = np.asarray(tfs, dtype=np.float64)
        df = np.bincount(term, minlength=n_terms).astype(np.float64)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        dl = np.asarray(lengths, dtype=np.float64)
        avgdl = float(dl.mean()) if n else 1.0
        norm = k1 * (1 - b + b * dl / (avgdl or 1.0))
        w = idf[term] * tf_arr * (k1 + 1) / (tf_arr + norm[doc]) if n else tf_arr
        order = np.lexsort((doc, term))
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(np.bincount(term, minlength=n_terms), out=indptr[1:])
        # question vectors (doc-major), idf-weighted and unit length, for the [0, 1] similarity
        qd = np.asarray(q_rows, dtype=np.int64)
        qt = np.asarray(q_cols, dtype=np.int64)
        qv = np.asarray(q_tfs, dtype=np.float64) * (idf[qt] if n else 1.0)
        qnorm = np.sqrt(np.bincount(qd, weights=qv * qv, minlength=n)) if n else np.zeros(0)
        qv = qv / np.where(qnorm[qd] > 0, qnorm[qd], 1.0) if n else qv
        qptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(qd, minlength=n), out=qptr[1:])
        params = {"tokens": tokens, "context_turns": context_turns, "context_weight": context_weight, "k1": k1,
                  "b": b, "avgdl": avgdl, "include_simulated": include_simulated}
        return cls(entries=entries, vocab=list(vocab), idf=idf.astype(np.float32), indptr=indptr,
                   docs=doc[order].astype(np.int32), weights=w[order].astype(np.float32), qptr=qptr,
                   qterms=qt.astype(np.int32), qweights=qv.astype(np.float32), params=params)

    @classmethod
    def from_data(cls, data: str | Path, **kwargs: Any) -> ReplyIndex:
        """Build from a prepared folder (its ``train.jsonl``) or a prepared JSONL file."""
        return cls.build(read_dialogues(data), **kwargs)

    # ------------------------------------------------------------------------------------------------ search
    def _query_terms(self, messages: Sequence[dict]) -> tuple[Counter, Counter]:
        question, context = _split_query(messages, self.context_turns)
        last = Counter(tokenize(question, self.tokens)) if question else Counter()
        weighted: Counter = Counter(last)
        for text in context:
            for term in tokenize(text, self.tokens):
                weighted[term] += self.context_weight
        return last, weighted

    def search(self, messages: Sequence[dict] | str, k: int = 5, *, unique: bool = True,
               exclude_dialogue: str | None = None) -> list[ReplyMatch]:
        """The ``k`` best past replies for a conversation so far (OpenAI-style messages, the customer's last message
        last; a string is one customer message), best first. ``unique``: one match per distinct reply text.
        ``exclude_dialogue``: leave that dialogue's replies out (training shows a turn the others' replies, never
        its own answer)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if k <= 0 or not self.entries:
            return []
        last, weighted = self._query_terms(messages)
        ids, qw = [], []
        for term, weight in weighted.items():
            tid = self.term_id.get(term)
            if tid is not None:
                ids.append(tid)
                qw.append(weight)
        if not ids:
            return []
        ids_arr = np.asarray(ids)
        starts, ends = self.indptr[ids_arr], self.indptr[ids_arr + 1]
        lengths = ends - starts
        offsets = np.cumsum(lengths) - lengths
        idx = np.arange(int(lengths.sum())) + np.repeat(starts - offsets, lengths)
        scores = np.bincount(self.docs[idx], weights=self.weights[idx] * np.repeat(np.asarray(qw), lengths),
                             minlength=len(self.entries))
        if exclude_dialogue is not None:
            scores[self._entries_of(exclude_dialogue)] = 0.0
        qvec = self._question_vector(last)
        positive = int(np.count_nonzero(scores > 0))
        if not positive:
            return []
        want = min(positive, k * 4 if unique else k)
        while True:  # widen the candidate set until k distinct replies are found or every positive entry is seen
            top = np.argpartition(-scores, want - 1)[:want] if want < len(scores) else np.arange(len(scores))
            top = top[np.lexsort((top, -scores[top]))]
            out = self._matches(top, scores, qvec, k, unique)
            if len(out) >= k or want >= positive:
                return out
            want = min(positive, want * 8)

    def exemplars(self, messages: Sequence[dict], k: int, *, min_similarity: float = 0.0,
                  exclude_dialogue: str | None = None, max_chars: int | None = None) -> list[str]:
        """The shop's own wording for the model's prompt: the replies of the ``k`` best distinct matches whose
        asked message is at least ``min_similarity`` alike and that state no figure (``kefu.kg.slots.states_figures``:
        another conversation's price, date or tracking number is never this one's, and a figure turned into a
        placeholder is one the model copies and cannot fill — tried on the sample shop: [数字x] copied, answers
        handed off), each cut to ``max_chars``. Figures come from the turn's facts."""
        out: list[str] = []
        for match in self.search(messages, 3 * k, exclude_dialogue=exclude_dialogue):
            if match.similarity < min_similarity or states_figures(match.reply):
                continue
            text = match.reply
            out.append(text if max_chars is None or len(text) <= max_chars else text[:max_chars] + "…")
            if len(out) == k:
                break
        return out

    def consensus(self, messages: Sequence[dict] | str, k: int = CONSENSUS_K, *,
                  min_similarity: float = CONSENSUS_MIN_SIMILARITY,
                  exclude_dialogue: str | None = None) -> list[Candidate]:
        """The ``k`` best distinct past replies for a conversation so far, ranked by :func:`by_agreement` (those
        asked at least ``min_similarity`` alike), most agreed first."""
        return by_agreement(self.search(messages, k, exclude_dialogue=exclude_dialogue), min_similarity)

    def _entries_of(self, dialogue_id: str) -> list[int]:
        """The indices of one dialogue's entries."""
        if self._by_dialogue is None:
            by: dict[str, list[int]] = {}
            for i, entry in enumerate(self.entries):
                by.setdefault(entry.dialogue_id, []).append(i)
            self._by_dialogue = by
        return self._by_dialogue.get(dialogue_id, [])

    def _matches(self, top: np.ndarray, scores: np.ndarray, qvec: dict[int, float], k: int,
                 unique: bool) -> list[ReplyMatch]:
        top = top[scores[top] > 0]
        if unique:  # the first (best) entry of each distinct reply, in score order
            _, first = np.unique(self.reply_ids[top], return_index=True)
            top = top[np.sort(first)]
        out: list[ReplyMatch] = []
        for d in top[:k]:
            entry = self.entries[int(d)]
            out.append(ReplyMatch(score=float(scores[d]), similarity=self._similarity(qvec, int(d)),
                                  reply=entry.reply, question=entry.question, context=list(entry.context),
                                  dialogue_id=entry.dialogue_id, turn=entry.turn))
        return out

    def _question_vector(self, last: Counter) -> dict[int, float]:
        """The asked message as {term id: unit idf-weighted tf}; terms the index never saw are id -1 - i."""
        vec: dict[int, float] = {}
        for i, (term, count) in enumerate(last.items()):
            tid = self.term_id.get(term)
            vec[tid if tid is not None else -1 - i] = count * (float(self.idf[tid]) if tid is not None
                                                               else self.max_idf)
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def _similarity(self, qvec: dict[int, float], d: int) -> float:
        s, e = self.qptr[d], self.qptr[d + 1]
        total = sum(qvec.get(int(t), 0.0) * float(w) for t, w in zip(self.qterms[s:e], self.qweights[s:e]))
        return round(min(1.0, max(0.0, total)), 6)

    # ------------------------------------------------------------------------------------------------ stock reply
    def most_common_reply(self) -> str:
        """The single most frequent agent reply (ties: the first seen); '' for an empty index."""
        counts = Counter(e.reply for e in self.entries)
        return counts.most_common(1)[0][0] if counts else ""

    # ------------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """One compressed ``.npz``: the arrays, and the texts/parameters as one UTF-8 JSON member."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "params": self.params, "vocab": self.vocab,
                "entries": [[e.reply, e.question, e.context, e.dialogue_id, e.turn] for e in self.entries]}
        blob = np.frombuffer(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                             dtype=np.uint8)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, meta=blob, idf=self.idf, indptr=self.indptr, docs=self.docs,
                                weights=self.weights, qptr=self.qptr, qterms=self.qterms, qweights=self.qweights)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReplyIndex:
        path = Path(path)
        if not path.is_file():
            raise KefuError(f"{path}: reply index not found (build it with `kefu kg replies build DATA --out FILE`)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
            meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise KefuError(f"{path}: not a kefu reply index: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise KefuError(f"{path}: not a kefu reply index (format {meta.get('format')!r}, expected {FORMAT})")
        entries = [_Entry(r, q, c, d, t) for r, q, c, d, t in meta["entries"]]
        missing = {"idf", "indptr", "docs", "weights", "qptr", "qterms", "qweights"} - set(arrays)
        if missing:
            raise KefuError(f"{path}: reply index lacks {', '.join(sorted(missing))}")
        return cls(entries=entries, vocab=meta["vocab"], params=meta["params"], **arrays)


def stats(index: ReplyIndex) -> dict[str, Any]:
    """Size figures for the CLI."""
    return {"replies": len(index), "distinct_replies": len({e.reply for e in index.entries}),
            "dialogues": len({e.dialogue_id for e in index.entries}), "terms": len(index.vocab),
            "postings": int(len(index.docs)), **{k: index.params[k] for k in ("tokens", "context_turns",
                                                                               "context_weight")}}


