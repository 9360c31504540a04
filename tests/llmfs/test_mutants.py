"""A learner's code wrong in one place fails a hidden test whose message names the mistake.

Each mutant is the reference solution with one line changed, graded by the hidden tests of its task; the
failure message must point at the right module (05: the hooks in tests/05/hf_reference.py compare every block)
or name the mistake (06: the realistic sampling mistakes of tests/06/hf_processors.py; 07: the cache's positions and
masks; 08: the residual drawn from p, no bonus token, a cache not rolled back, holes not masked, ...). SPEED's mutants
give right answers slowly and must lose their benchmark's points, with a hint at the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

GPT2 = [  # (description, original line fragment, replacement, test selection, expected words in the message)
    ("attention scale sqrt(C)", "/ math.sqrt(k.size(-1))", "/ math.sqrt(C)", "small_models", "block 0: the attention"),
    ("GELU without tanh", 'F.gelu(self.c_fc(x), approximate="tanh")', "F.gelu(self.c_fc(x))", "small_models",
     "block 0: the MLP"),
    ("no causal mask", 'att = att.masked_fill_(future, float("-inf")).softmax(dim=-1)', "att = att.softmax(dim=-1)",
     "small_models", "the attention"),
    ("post-norm block", "x = x + self.attn(self.ln_1(x), rope, offset)",
     "x = self.ln_1(x + self.attn(x, rope, offset))", "small_models", "block 0: ln_1"),
    ("no wpe", "x = x + self.transformer.wpe(", "x = x + 0 * self.transformer.wpe(", "small_models",
     "wte(idx) + wpe(positions)"),
    ("Conv1D weights not transposed", "value.t() if key.endswith(TRANSPOSED) else value", "value", "from_hf_loads",
     "wrong shape"),
]
TEMPERATURE = ("        if config.temperature != 1:\n"
               "            logits = processors.apply_temperature(logits, config.temperature)\n")
FILTERS = ("        if config.top_k is not None:\n"
           "            logits = processors.top_k_filter(logits, config.top_k, config.min_tokens_to_keep)\n"
           "        if config.top_p < 1:\n"
           "            logits = processors.top_p_filter(logits, config.top_p, config.min_tokens_to_keep)\n")
TEMPERATURE_FIRST, TEMPERATURE_LAST = TEMPERATURE + FILTERS, FILTERS + TEMPERATURE
SAMPLING = [  # the same, in milestone 06 (file, then the fields above)
    ("processors", "top-p drops the crossing token", "remove_sorted = mass_before >= top_p",
     "remove_sorted = mass_before + probs >= top_p", "top_p_equals", "drops the token whose probability crosses"),
    ("processors", "top-p keeps the crossing token only when below p", "remove_sorted = mass_before >= top_p",
     "remove_sorted = mass_before + probs > top_p", "exactly_representable", "the token that crosses (or reaches)"),
    ("processors", "top-k without ties", "return logits.masked_fill(logits < kth_largest, float(\"-inf\"))",
     "return logits.masked_fill(~torch.zeros_like(logits, dtype=torch.bool).scatter(-1, "
     "torch.topk(logits, k).indices, True), float(\"-inf\"))", "tied_with_the_kth", "with ties"),
    ("processors", "penalties count padding", "counts.scatter_add_(1, tokens, mask.to(torch.float32))",
     "counts.scatter_add_(1, tokens, torch.ones_like(tokens, dtype=torch.float32))", "padding_never_counts",
     "counted padded positions"),
    ("processors", "repetition penalty divides negative logits",
     "torch.where(logits < 0, logits * penalty, logits / penalty)", "logits / penalty",
     "repetition_penalty_equals", "wrong on negative logits"),
    ("processors", "temperature multiplies", "return logits / temperature", "return logits * temperature",
     "temperature_divides", "divide, do not multiply"),
    ("sampling", "temperature after top-p", TEMPERATURE_FIRST, TEMPERATURE_LAST, "process_logits_equals",
     "temperature after top-k and top-p"),
    ("sampling", "presence/frequency count the prompt", "tokens[:, prompt_length:], config.presence_penalty",
     "tokens, config.presence_penalty", "greedy_penalizes", "counted the prompt"),
    ("sampling", "no context crop", "model(idx[:, -block_size:])", "model(idx)", "crops_the_context",
     "crop the context"),
    ("sampling", "context cropped one token short", "model(idx[:, -block_size:])", "model(idx[:, -block_size + 1:])",
     "crops_the_context", "the last block_size tokens, no fewer"),
    ("sampling", "no padding after end of text", "next_token = next_token.masked_fill(finished, pad_token_id)",
     "next_token = next_token", "end_of_text", "pad_token_id=96: new token"),
    ("sampling", "no early stop when every row has ended",
     "                if finished.all():\n                    break\n", "", "end_of_text",
     "stop once every row has ended"),
    ("sampling", "the generator not passed on", "return draw(logits.softmax(dim=-1), generator)",
     "return draw(logits.softmax(dim=-1))", "one_generator", "pass `generator` on to draw"),
    ("sampling", "argmax instead of a draw", "return draw(logits.softmax(dim=-1), generator)",
     "return logits.argmax(dim=-1)", "draws_from", "do not follow the processed distribution"),
]
EXPLICIT_SOFTMAX = ("att = (q @ k.transpose(-2, -1)) / k.size(-1) ** 0.5; y = att.masked_fill(~mask, float('-inf'))"
                    ".softmax(-1) @ v if mask is not None else att.softmax(-1) @ v")
CACHE = [  # milestone 07: a cache, positions or masks wrong in one place (several anchors: changed together)
    ("kvcache", "top-left causal mask (tril without the offset)", "tril(diagonal=S - T)", "tril()", "chunks_after",
     "needs the bottom-right causal mask"),
    ("kvcache", "is_causal=True after a cache",
     ("    if mask is None and T > 1:\n        mask = causal_mask(T, k.size(2), x.device)\n",
      "attn_mask=mask)"), ("", "attn_mask=mask, is_causal=mask is None and T > 1)"), "chunks_after",
     "is_causal=True"),
    ("kvcache", "update returns the new keys only", "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]",
     "return k, v", "token_by_token", "attends to every cached key"),
    ("kvcache", "new tokens at positions 0.. after a cache", "torch.arange(L, L + T, device=idx.device)",
     "torch.arange(0, T, device=idx.device)", "token_by_token", "its position is the cache's length"),
    ("kvcache", "length not advanced", "    cache.length = L + T\n", "", "rollback", "adds the new tokens' positions"),
    ("kvcache", "positions counted from the padding", "(mask.long().cumsum(dim=-1) - 1).clamp(min=0)",
     "torch.arange(mask.size(1)).expand(mask.shape)", "position_ids_count", "counts the padding"),
    ("kvcache", "padding queries see nothing: NaN through an explicit softmax",
     ("return causal & (real | own)", "y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)"),
     ("return causal & real", EXPLICIT_SOFTMAX), "no_nan", "NaN or inf in the output"),
    ("kvcache", "padding queries see no key", "return causal & (real | own)", "return causal & real",
     "padded_causal_mask", "every query sees its own position"),
    ("kvcache", "RoPE tables cast to bfloat16", "        setattr(model, name, buffer)\n", "        pass\n", "to_dtype",
     "keep RoPE's tables in float32"),
    ("kvcache", "logits in the model's dtype", "return model.lm_head(model.transformer.ln_f(x)).float()",
     "return model.lm_head(model.transformer.ln_f(x))", "half_precision", "returns float32 logits"),
    ("decoding", "prefill ignores the mask's positions",
     "position_ids = None if attention_mask is None else kvcache.position_ids_from_mask(attention_mask)",
     "position_ids = None if attention_mask is None else kvcache.position_ids_from_mask(attention_mask) * 0",
     "each_prompt_its_own", "positions come from the mask"),
    ("decoding", "decoding positions not advanced", "                position_ids = position_ids + 1\n",
     "                pass\n", "each_prompt_its_own", "each new token's position is its row's last + 1"),
    ("decoding", "left_pad pads on the right", "idx[row, T - len(prompt):] = torch.as_tensor(",
     "idx[row, :len(prompt)] = torch.as_tensor(", "left_pad_builds", "(padding on the left)"),
    ("decoding", "right padding accepted", "    if (attention_mask[:, :-1] & ~attention_mask[:, 1:]).any():\n",
     "    if False:\n", "check_attention_mask", "padded on the right"),
    ("decoding", "penalties count the padding",
     "real = attention_mask if padded else torch.ones_like(idx, dtype=torch.bool)",
     "real = torch.ones_like(idx, dtype=torch.bool)", "penalties_never_count", "padding is never penalized"),
    ("decoding", "the whole sequence fed at every step", "logits = kvcache.forward_cached(model, idx[:, -1:], cache",
     "cache.rollback(0)\n            logits = kvcache.forward_cached(model, idx, cache", "one_prefill",
     "feed only idx[:, -1:]"),
    ("decoding", "no block_size check", "    if T + max_new_tokens > block_size:\n", "    if False:\n",
     "cannot_hold", "block_size"),
    ("decoding", "generators not passed on", "sampling.sample_next_token(logits, generator)",
     "sampling.sample_next_token(logits)", "per_row_generators", "the generators passed on"),
]
SPECULATIVE = [  # milestone 08: the rejection rule, the caches or the batch layout wrong in one place
    ("verify", "residual drawn from p", "next_probs = residual(target_probs[rows, accepted], q_padded[rows, accepted])",
     "next_probs = target_probs[rows, accepted]", "comes_from_the_residual", "that is a draw from p itself"),
    ("verify", "no bonus token", "    next_probs = residual(target_probs[rows, accepted], q_padded[rows, accepted])",
     "    last = accepted.clamp(max=g - 1)\n    next_probs = residual(target_probs[rows, last], q_padded[rows, last])",
     "bonus_token or own_draft", "the bonus token"),
    ("verify", "accepted with probability q/p", "ok = uniforms[:, :g] * q < p", "ok = uniforms[:, :g] * p < q",
     "p_over_q", "min(1, p/q), not q/p"),
    ("verify", "every acceptance counted, not the leading run", "accepted = ok.long().cumprod(dim=1).sum(dim=1)",
     "accepted = ok.long().sum(dim=1)", "leading_run", "ending the round"),
    ("verify", "greedy next token from the last position",
     "return accepted, best.gather(1, accepted[:, None]).squeeze(1)", "return accepted, best[:, -1]",
     "greedy_verification", "next token"),
    ("speculative", "the draft's cache not rolled back",
     "        self.draft_cache.rollback(min(self.draft_cache.length, self.length - 1))\n", "",
     "fresh_forwards", "roll the draft's cache back"),
    ("speculative", "the target's cache not rolled back", "        self.target_cache.rollback(self.length - 1)\n", "",
     "fresh_forwards", "the target's"),
    ("speculative", "draft tokens chosen by argmax while sampling", "token = sampling.draw(q, self.generator)",
     "token = q.argmax(dim=-1)", "sampled_sequences and plain", "do not follow the target's distribution"),
    ("speculative", "holes not masked", "return torch.arange(n, device=accepted.device)[None, :] < accepted[:, None]",
     "return torch.ones(accepted.size(0), n, dtype=torch.bool)", "left_padded_batch", "Mask each row's rejected"),
    ("speculative", "draft positions count the holes", "self.pos[:, L + i] = self.count + i",
     "self.pos[:, L + i] = L + i", "left_padded_batch", "position ids"),
]
SPEED = [  # right answers, slowly: each loses its benchmark's points (course.toml's thresholds), with a hint
    ("01", "bigram", "count_bigrams loops over the bigrams",
     "    return torch.bincount(pairs, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)",
     "    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)\n"
     "    for a, b in zip(data[:-1].tolist(), data[1:].tolist()):\n        counts[a, b] += 1\n    return counts",
     "vectorised", "count every pair with one tensor operation"),
    ("05", "gpt2", "flash flag ignored", "        if self.flash:", "        if False:", "flash",
     "on the flash path call F.scaled_dot_product_attention"),
    ("05", "data", "loader converts token by token",
     "        rows = np.stack([self.tokens[s][start : start + self.T + 1].astype(np.int64) for s, start in chosen])",
     "        rows = np.array([[int(t) for t in self.tokens[s][start : start + self.T + 1]] for s, start in chosen])",
     "as_fast_as_a_plain_memmap", "read only the batch's windows"),
]
MUTANTS = [("05", "gpt2", *m) for m in GPT2] + [("06", *m) for m in SAMPLING] + [("07", *m) for m in CACHE] + [
    ("08", *m) for m in SPECULATIVE] + SPEED


@pytest.mark.slow
@pytest.mark.parametrize("milestone,module,what,original,mutated,selection,expected", MUTANTS,
                         ids=[f"{m[0]} {m[2]}" for m in MUTANTS])
def test_a_single_mistake_fails_with_a_message_naming_the_part(course, tmp_path, milestone, module, what, original,
                                                               mutated, selection, expected):
    root = tmp_path / "root"
    shutil.copytree(course.solutions / milestone, root / milestone, ignore=shutil.ignore_patterns("__pycache__"))
    path = root / milestone / f"{module}.py"
    source = path.read_text()
    pairs = zip(original, mutated, strict=True) if isinstance(original, tuple) else [(original, mutated)]
    for anchor, replacement in pairs:
        assert source.count(anchor) == 1, f"the mutant's anchor {anchor!r} is not in solutions/{milestone}/{module}.py"
        source = source.replace(anchor, replacement)
    path.write_text(source)
    env = {**os.environ, "LLMFS_DEPS_ROOT": str(course.solutions)}  # as llmfs grade: earlier milestones' references
    proc = subprocess.run([sys.executable, "-m", "pytest", f"tests/{milestone}", "-k", selection, "--impl-root",
                           str(root), "-p", "no:randomly", "-q"], cwd=course.root, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert expected in proc.stdout, proc.stdout[-3000:]
