"""Milestone 08: speculative decoding with two KV caches, exact in distribution, for batches.

    python milestones/08/speculative.py pair                      # train the course's draft/target pair (once)
    python milestones/08/speculative.py generate --prompt "Once upon a time" --gamma 4

A small draft model guesses gamma tokens, one at a time; the target checks all of them in one forward pass;
`verify` keeps the longest acceptable prefix plus one token of the target's own. Both models keep a KV cache
(milestone 07) over one shared layout of positions; rejected tokens are rolled back, and in a batch each row's
rejected positions become *holes*, masked like padding. The README (One round, Batches) has the picture.
Shapes in the comments: B rows, T prompt length, g draft tokens this round, V vocabulary.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone (the tests do this)
    from . import verify as rule
else:  # run as a script: python milestones/08/speculative.py
    import verify as rule

kvcache = dependency("07", "kvcache")  # KVCache, forward_cached
decoding07 = dependency("07", "decoding")  # check_attention_mask
sampling = dependency("06", "sampling")  # SamplingConfig, process_logits, draw


@dataclass
class Round:
    """What one round decided, for every row: the draft's tokens and logits, the target's logits (float32, before
    any filter), how many draft tokens each row accepted and the token that follows them."""

    draft_tokens: torch.Tensor  # (B, g)
    draft_logits: torch.Tensor  # (B, g, V)
    target_logits: torch.Tensor  # (B, g+1, V)
    accepted: torch.Tensor  # (B,)
    next_token: torch.Tensor  # (B,)


@dataclass
class Stats:
    """Counts over a whole generation: target and draft forward passes, draft tokens proposed and accepted."""

    target_calls: int = 0
    draft_calls: int = 0
    proposed: int = 0
    accepted: int = 0
    rejected: int = 0  # rounds (of rows) that ended in a rejection
    rounds: list[int] = field(default_factory=list)  # tokens per round (row 0)

    @property
    def acceptance(self) -> float:
        """The share of proposed draft tokens accepted."""
        return self.accepted / max(self.proposed, 1)

    @property
    def alpha(self) -> float:
        """The chance that a draft token is accepted, given that it is checked (its predecessors were accepted):
        accepted / (accepted + rejected). The `alpha` of the speed-up formula (results.py)."""
        return self.accepted / max(self.accepted + self.rejected, 1)


def check_pair(target: nn.Module, draft: nn.Module) -> None:
    """ValueError unless the two models share a vocabulary (given code): the draft's token ids must mean the
    target's tokens. Models that carry a `tokenizer_name` must carry the same one."""
    tv, dv = target.config.vocab_size, draft.config.vocab_size
    if tv != dv:
        raise ValueError(f"draft and target have different vocabularies: vocab_size {dv} and {tv}; speculative "
                         "decoding needs the draft's token ids to mean the target's tokens")
    names = getattr(target, "tokenizer_name", None), getattr(draft, "tokenizer_name", None)
    if None not in names and names[0] != names[1]:
        raise ValueError(f"draft and target use different tokenizers: {names[1]!r} and {names[0]!r}")


def _check_args(target, draft, idx, max_new_tokens, gamma, attention_mask) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or 0 in idx.shape:
        raise ValueError(f"idx must be a non-empty (B, T) tensor of int64 token ids, got "
                         f"{tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__}")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
        raise ValueError(f"gamma (draft tokens per round) must be an int >= 1, got {gamma!r}")
    check_pair(target, draft)
    real = idx.size(1) if attention_mask is None else int(attention_mask.sum(dim=1).max())
    for name, model in (("target", target), ("draft", draft)):
        if real + max_new_tokens > model.config.block_size:
            raise ValueError(f"a prompt of {real} tokens and max_new_tokens={max_new_tokens} do not fit the "
                             f"{name}'s block_size={model.config.block_size}")


# ----------------------------------------------------------------------------------------------------
# task08_2: one round (propose, score, verify, commit) and the loop


class SpeculativeDecoder:
    """The state of one speculative generation: the shared layout of positions and both KV caches.

    seq (B, max_len) holds the token at every position, mask (B, max_len) whether it is real (False: left padding or
    a hole), pos (B, max_len) its position id (the number of real tokens before it). Positions 0..length-1 hold the
    committed tokens; the last, length - 1, is *pending*: its logits are still to be computed. The target's cache
    holds every position before it (target_cache.length == length - 1), the draft's one or two fewer.
    """

    def __init__(self, target: nn.Module, draft: nn.Module, idx: torch.Tensor, max_new_tokens: int, gamma: int = 4,
                 *, attention_mask: torch.Tensor | None = None, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, generator: torch.Generator | None = None, **settings) -> None:
        """Check the input (ValueError naming what is wrong), build the layout and run the prompt through both
        models (a prefill of all but the pending last token). `settings` are 06's SamplingConfig's; the
        penalties are refused (they would make each position's distribution depend on the draft's tokens)."""
        _check_args(target, draft, idx, max_new_tokens, gamma, attention_mask)
        self.config = sampling.SamplingConfig(**settings)
        c = self.config
        if c.repetition_penalty != 1 or c.presence_penalty != 0 or c.frequency_penalty != 0:
            raise ValueError("speculative decoding here takes temperature, top_k and top_p; not the repetition, "
                             "presence or frequency penalties")
        B, T = idx.shape
        self.target, self.draft, self.gamma, self.generator = target, draft, gamma, generator
        self.eos_token_id = eos_token_id
        self.pad_token_id = eos_token_id if pad_token_id is None else pad_token_id
        self.prompt_length, self.max_new_tokens = T, max_new_tokens
        self.masked = attention_mask is not None or B > 1  # no padding and no holes: plain cached positions
        max_len = T + max(max_new_tokens, 1) * (1 if B == 1 else gamma + 1)
        self.seq = idx.new_zeros(B, max_len)
        self.seq[:, :T] = idx
        self.mask = torch.zeros(B, max_len, dtype=torch.bool, device=idx.device)
        self.mask[:, :T] = True if attention_mask is None else decoding07.check_attention_mask(idx, attention_mask)
        self.pos = torch.zeros(B, max_len, dtype=torch.long, device=idx.device)
        self.pos[:, :T] = kvcache.position_ids_from_mask(self.mask[:, :T])
        self.count = self.mask[:, :T].sum(dim=1)  # (B,): real tokens so far
        self.produced = torch.zeros(B, dtype=torch.long, device=idx.device)  # new tokens per row
        self.finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
        self.length = T
        self.stats = Stats()
        self.target_cache = kvcache.KVCache.for_model(target, B, max_len)
        self.draft_cache = kvcache.KVCache.for_model(draft, B, max_len)
        if T > 1:  # the prompt but its last token, through both models
            with torch.no_grad():
                for model, cache in ((target, self.target_cache), (draft, self.draft_cache)):
                    self._forward(model, cache, T - 1)

    def _forward(self, model: nn.Module, cache, end: int, last_only: bool = False) -> torch.Tensor:
        """Logits (B, n, V) of `model` for positions cache.length..end-1, which enter its cache (given code)."""
        start = cache.length
        if end <= start:
            name = "target" if model is self.target else "draft"
            raise RuntimeError(f"the {name}'s cache already holds {start} positions, but the next token to feed is at "
                               f"position {end - 1}: roll the {name}'s cache back to the accepted tokens in `commit`")
        if not self.masked:
            return kvcache.forward_cached(model, self.seq[:, start:end], cache, last_only=last_only)
        return kvcache.forward_cached(model, self.seq[:, start:end], cache, self.mask[:, :end],
                                      self.pos[:, start:end], last_only=last_only)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The sampling distribution of logits (B, n, V) after 06's temperature, top-k and top-p (given code)."""
        B, n, V = logits.shape
        flat = logits.reshape(B * n, V)
        if self.config.changes_logits:
            flat = sampling.process_logits(flat, flat.new_zeros(B * n, 0, dtype=torch.long), 0, self.config)
        return flat.softmax(dim=-1).view(B, n, V)

    def gamma_now(self) -> int:
        """Draft tokens this round: gamma, or fewer near the end (a round must not overshoot max_new_tokens by
        more than it can help: the row that needs the most still needs `remaining` tokens, gamma + 1 at most)."""
        remaining = (self.max_new_tokens - self.produced).masked_fill(self.finished, 0).max()
        return int(min(self.gamma, int(remaining) - 1))

    @torch.no_grad()
    def propose(self, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The draft's g tokens (B, g), its logits (B, g, V) and, when sampling, the distributions it drew them
        from (B, g, V) (`probabilities`; None when greedy).

        Step i feeds the draft what its cache lacks (first `seq[:, draft_cache.length:length]`, the pending token,
        or two tokens after a round that accepted everything; then the token it just chose) with `_forward(...,
        last_only=True)`, and picks d_i: 06's `sampling.draw` from its probabilities with self.generator, or the
        argmax when greedy. d_i goes into seq at position length + i (mask True, position count + i), so the
        next step and `score` can read it. The draft never feeds d_g: its cache ends at length + g - 1.
        """
        ### BEGIN SOLUTION
        L, B = self.length, self.seq.size(0)
        tokens = self.seq.new_zeros(B, g)
        logits, probs = [], []
        for i in range(g):
            out = self._forward(self.draft, self.draft_cache, L + i, last_only=True)[:, -1, :]  # (B, V)
            self.stats.draft_calls += 1
            logits.append(out)
            if self.config.do_sample:
                q = self.probabilities(out[:, None, :])[:, 0]  # (B, V)
                probs.append(q)
                token = sampling.draw(q, self.generator)
            else:
                token = out.argmax(dim=-1)
            tokens[:, i] = token
            self.seq[:, L + i] = token
            self.mask[:, L + i] = True
            self.pos[:, L + i] = self.count + i
        V = self.draft.config.vocab_size
        stacked = torch.stack(logits, dim=1) if g else self.seq.new_zeros(B, 0, V, dtype=torch.float32)
        if not self.config.do_sample:
            return tokens, stacked, None
        q = torch.stack(probs, dim=1) if g else torch.zeros(B, 0, V)
        return tokens, stacked, q
        ### END SOLUTION

    @torch.no_grad()
    def score(self, g: int) -> torch.Tensor:
        """The target's float32 logits (B, g+1, V) for the pending token and the g draft tokens (positions
        length - 1 .. length + g - 1), in one forward pass that writes them all into its cache."""
        ### BEGIN SOLUTION
        self.stats.target_calls += 1
        return self._forward(self.target, self.target_cache, self.length + g)
        ### END SOLUTION

    @torch.no_grad()
    def commit(self, accepted: torch.Tensor, next_token: torch.Tensor) -> None:
        """Keep each row's accepted draft tokens and its next token, forget the rest.

        With n = the most any unfinished row accepted (finished rows count as 0): positions length..length+n-1
        keep draft tokens (`round_mask` says which are real for each row: for one row, all of them), next_token
        goes at position length + n (real, position id count + accepted), length becomes length + n + 1, count
        grows by accepted + 1 and `produced` too. The target's cache rolls back to length - 1 (the new pending
        token is not in it), the draft's to min(its length, length - 1). Then the end of text: a row whose new
        tokens include eos_token_id finishes there; a row that has produced max_new_tokens finishes too.
        """
        ### BEGIN SOLUTION
        L = self.length
        accepted = accepted.masked_fill(self.finished, 0)
        n = int(accepted.max())
        keep = round_mask(accepted, n) if self.seq.size(0) > 1 else self.mask.new_ones(1, n)  # (B, n)
        self.mask[:, L : L + n] = keep
        new_tokens = torch.cat([self.seq[:, L : L + n], next_token[:, None]], dim=1)  # (B, n+1)
        real = torch.cat([keep, keep.new_ones(keep.size(0), 1)], dim=1)
        self.seq[:, L + n] = next_token
        self.mask[:, L + n] = True
        self.pos[:, L + n] = self.count + accepted
        self.length = L + n + 1
        self.count = self.count + accepted + 1
        self.produced = self.produced + torch.where(self.finished, 0, accepted + 1)
        self.target_cache.rollback(self.length - 1)
        self.draft_cache.rollback(min(self.draft_cache.length, self.length - 1))
        if self.eos_token_id is not None:
            self.finished |= ((new_tokens == self.eos_token_id) & real).any(dim=1)
        self.finished |= self.produced >= self.max_new_tokens
        ### END SOLUTION

    @torch.no_grad()
    def step(self) -> Round:
        """One round: propose, score, verify (sampled with uniforms from self.generator, or greedy), commit."""
        g = self.gamma_now()
        tokens, draft_logits, q = self.propose(g)
        target_logits = self.score(g)
        if self.config.do_sample:
            p = self.probabilities(target_logits)
            u = torch.rand(tokens.size(0), g + 1, generator=self.generator, device=tokens.device)
            accepted, next_token = rule.verify(p, q, tokens, u)
        else:
            accepted, next_token = rule.verify_greedy(target_logits, tokens)
        alive = ~self.finished
        self.stats.proposed += g * int(alive.sum())
        self.stats.accepted += int(accepted[alive].sum())
        self.stats.rejected += int((accepted[alive] < g).sum())
        self.stats.rounds.append(int(accepted[0]) + 1)
        self.commit(accepted, next_token)
        return Round(tokens, draft_logits, target_logits, accepted, next_token)

    def output(self) -> torch.Tensor:
        """(B, T + n): the prompts as given, then each row's new tokens (holes skipped, at most max_new_tokens, cut
        after its end of text); shorter rows padded with pad_token_id; n is the longest row's count (given code)."""
        T = self.prompt_length
        rows = []
        for b in range(self.seq.size(0)):
            new = self.seq[b, T : self.length][self.mask[b, T : self.length]][: self.max_new_tokens]
            if self.eos_token_id is not None and (new == self.eos_token_id).any():
                new = new[: int((new == self.eos_token_id).nonzero()[0]) + 1]
            rows.append(new)
        n = max(len(r) for r in rows)
        pad = self.pad_token_id if self.pad_token_id is not None else 0
        new = torch.stack([torch.cat([r, r.new_full((n - len(r),), pad)]) for r in rows])
        return torch.cat([self.seq[:, :T], new], dim=1)


@torch.no_grad()
def speculative_generate(target: nn.Module, draft: nn.Module, idx: torch.Tensor, max_new_tokens: int,
                         gamma: int = 4, *, attention_mask: torch.Tensor | None = None,
                         eos_token_id: int | None = None, pad_token_id: int | None = None,
                         generator: torch.Generator | None = None, return_stats: bool = False, **settings):
    """Continue each row of idx (B, T) by max_new_tokens tokens (fewer after an end of text) with the target's
    distribution (greedy: exactly the target's greedy tokens), proposing gamma draft tokens per round.
    Returns (B, T + n), and the decoder's Stats with return_stats=True.

    A SpeculativeDecoder, then `step` until every row has finished (none at all for max_new_tokens = 0).
    """
    ### BEGIN SOLUTION
    decoder = SpeculativeDecoder(target, draft, idx, max_new_tokens, gamma, attention_mask=attention_mask,
                                 eos_token_id=eos_token_id, pad_token_id=pad_token_id, generator=generator,
                                 **settings)
    if max_new_tokens == 0:
        decoder.finished[:] = True
    while not bool(decoder.finished.all()):
        decoder.step()
    out = decoder.output()
    return (out, decoder.stats) if return_stats else out
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# task08_3: batches


def round_mask(accepted: torch.Tensor, n: int) -> torch.Tensor:
    """Which of a round's n kept draft positions are real in each row: accepted (B,) -> (B, n) bool, True where
    position i < accepted[b]. The rest are row b's holes: rejected tokens the other rows' longer runs kept room for."""
    ### BEGIN SOLUTION
    return torch.arange(n, device=accepted.device)[None, :] < accepted[:, None]
    ### END SOLUTION


# ----------------------------------------------------------------------------------------------------
# The command line (given code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Speculative decoding with the course's draft/target pair.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("pair", help="train the pair now (once; llmfs grade does it before the tests)")
    build.add_argument("--out", type=Path, default=None, help="a folder of your own (default: the data cache)")
    build.add_argument("--max-steps", type=int, default=None, help="shorter training, for a try-out")
    run = commands.add_parser("generate", help="continue prompts with the pair, as one batch")
    run.add_argument("--pair", type=Path, default=None, help="a pair's folder (default: the course's, built once)")
    run.add_argument("--prompt", action="append", help="repeat for a batch (default: 'Once upon a time')")
    run.add_argument("--max-new-tokens", type=int, default=100)
    run.add_argument("--gamma", type=int, default=4, help="draft tokens per round (default: %(default)s)")
    run.add_argument("--greedy", action="store_true", help="the target's most likely token (default: sample)")
    run.add_argument("--temperature", type=float, default=1.0)
    run.add_argument("--top-k", type=int, default=None)
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--dtype", choices=sorted(decoding07.DTYPES), default="float32")
    run.add_argument("--seed", type=int, default=0)
    page = commands.add_parser("results", help="rebuild the results page (milestones/08/results)")
    page.add_argument("--out", type=Path, default=Path("milestones/08/results"), help="(default: %(default)s)")
    page.add_argument("--quick", action="store_true", help="gamma 1, 2 and 4, shorter runs, for a try-out")
    page.add_argument("--pair", type=Path, default=None, help="a pair's folder (default: the course's, built once)")
    args = parser.parse_args(argv)
    if __package__:
        from . import pair as pairs
        from .results import write_results
    else:
        import pair as pairs
        from results import write_results
    if args.command == "results":
        write_results(args.out, quick=args.quick, folder=args.pair)
        return
    if args.command == "pair":
        folder = pairs.build(args.out, max_steps=args.max_steps) if args.out else None
        print(pairs.describe(pairs.load_pair(folder).info))
        return
    pair = pairs.load_pair(args.pair, dtype=decoding07.DTYPES[args.dtype])
    print(pairs.describe(pair.info))
    texts = args.prompt or ["Once upon a time"]
    ids = [[pair.eos_token_id, *pair.tokenizer.encode_ordinary(t.encode().decode("unicode_escape"))] for t in texts]
    idx, mask = decoding07.left_pad(ids, pair.eos_token_id)
    try:
        out, stats = speculative_generate(
            pair.target, pair.draft, idx, args.max_new_tokens, args.gamma, attention_mask=mask,
            eos_token_id=pair.eos_token_id, generator=torch.Generator().manual_seed(args.seed), return_stats=True,
            do_sample=not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    for text, row in zip(texts, out, strict=True):
        new = [t for t in row[idx.size(1):].tolist() if t != pair.eos_token_id]
        print(f"--- {text!r}\n{text}{pair.tokenizer.decode(new)}\n")
    per_pass = sum(stats.rounds) / max(len(stats.rounds), 1)
    print(f"{stats.target_calls} target passes; alpha {stats.alpha:.2f}; {per_pass:.2f} tokens per pass (first row)")

if __name__ == "__main__":
    main()
