"""Repetition control for the local engine's decode: the CTRL repetition penalty and a no-repeat n-gram ban, per row.

Both look at the reply only (the tokens generated for this request), never the prompt: a grounded answer must stay
free to copy the names, prices and policies its prompt gives it, and the loops seen in production ("尺码是尺码，
尺码是尺码…", "请问还有其他可以帮到您的吗?" to the token limit) are repeats within the reply. The semantics are those of
transformers' ``RepetitionPenaltyLogitsProcessor`` (a seen token's positive logit is divided by the penalty, a negative
one multiplied) and ``NoRepeatNGramLogitsProcessor`` (a token that would complete an n-gram already in the reply gets
-inf), with ``input_ids`` = the reply, applied to raw logits before temperature and top-k/top-p.
"""

from __future__ import annotations


class History:
    """One row's reply as repetition control sees it: the distinct tokens, and per (n-1)-gram the tokens that followed
    it. ``ids`` is the row's own list of generated ids (shared, appended by the engine); ``note`` follows each
    append."""

    __slots__ = ("penalty", "n", "ids", "seen", "follow")

    def __init__(self, ids: list[int], penalty: float = 1.0, n: int = 0):
        self.ids, self.penalty, self.n = ids, penalty, n
        self.seen: set[int] = set()
        self.follow: dict[tuple[int, ...], set[int]] = {}

    @property
    def active(self) -> bool:
        return self.penalty != 1.0 or self.n > 0

    def note(self) -> None:
        """Account for the token just appended to ``ids``."""
        ids, n = self.ids, self.n
        self.seen.add(ids[-1])
        if n and len(ids) >= n:
            self.follow.setdefault(tuple(ids[len(ids) - n:-1]), set()).add(ids[-1])

    def banned(self, extra: list[int] = ()) -> set[int]:
        """Tokens that would complete an n-gram already in the reply followed by ``extra`` (draft tokens under
        verification, not yet accepted)."""
        n = self.n
        if not n:
            return set()
        ids = self.ids + list(extra) if extra else self.ids
        if len(ids) + 1 < n:
            return set()
        tail = tuple(ids[len(ids) - n + 1:])
        out = set(self.follow.get(tail, ()))
        for k in range(max(len(self.ids), n - 1), len(ids)):  # n-grams that end inside ``extra``
            if tuple(ids[k - n + 1:k]) == tail:
                out.add(ids[k])
        return out


def control_repetition(logits, histories: list[History], drafts: list[list[int]]):
    """``logits`` [rows, width, vocab] with each row's penalty and n-gram ban applied (in place when contiguous):
    position ``j`` of row ``r`` is the next-token distribution after that row's reply and ``drafts[r][:j]``, so drafted
    tokens are verified under exactly the rules one-token steps use. Positions past a row's draft are left alone."""
    import torch  # deferred: heavy

    if not any(h.active for h in histories):
        return logits
    logits = logits.contiguous()
    width, vocab = logits.shape[1], logits.shape[2]
    flat = logits.view(-1)
    seen_at, penalties, banned_at = [], [], []
    for r, (history, draft) in enumerate(zip(histories, drafts)):
        if not history.active:
            continue
        offsets = [(r * width + j) * vocab for j in range(len(draft) + 1)]
        if history.penalty != 1.0:
            parts = []
            if history.seen:  # the reply's tokens, at every position of the row
                parts.append((torch.tensor(offsets)[:, None] + torch.tensor(list(history.seen))).flatten())
            new = [t for t in dict.fromkeys(draft) if t not in history.seen]  # draft tokens the reply lacks
            if later := [offset + t for j, offset in enumerate(offsets) for t in new if t in draft[:j]]:
                parts.append(torch.tensor(later))
            if parts:
                seen_at.extend(parts)
                penalties.append(torch.full((sum(len(part) for part in parts),), history.penalty,
                                            dtype=logits.dtype))
        for j, offset in enumerate(offsets):
            banned_at.extend(offset + t for t in history.banned(draft[:j]))
    if seen_at:
        index = torch.cat(seen_at)
        scores = flat[index]
        penalty = torch.cat(penalties)
        flat[index] = torch.where(scores < 0, scores * penalty, scores / penalty)
    if banned_at:
        flat[torch.tensor(banned_at)] = float("-inf")
    return logits
