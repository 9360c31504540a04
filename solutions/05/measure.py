"""Milestone 05: measuring a model: its HellaSwag score, and the training step's throughput (given code).

`python milestones/05/train.py hellaswag ...` and `python milestones/05/train.py ladder ...` run these; they use
your GPT (tasks 05_1 and 05_2), your HellaSwag scoring (task05_7) and your optimiser and gradient accumulation
(task05_5).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from llmfs.loader import dependency

if __package__:  # imported as part of the milestone
    from .gpt2 import GPT
    from .hellaswag import evaluate as hellaswag_evaluate
    from .hellaswag import gpt2_encode, load_examples
    from .presets import PRESETS, TrainConfig
    from .train import accumulate_gradients, configure_optimizers, speed_context
else:  # run through train.py as a script
    from gpt2 import GPT
    from hellaswag import evaluate as hellaswag_evaluate
    from hellaswag import gpt2_encode, load_examples
    from presets import PRESETS, TrainConfig
    from train import accumulate_gradients, configure_optimizers, speed_context

m02 = dependency("02", "train")  # your milestone 02: load_checkpoint


def score_hellaswag(model_name: str, limit: int | None, device: str) -> dict[str, float]:
    """HellaSwag acc and acc_norm of a last.pt written by train.py, a local HF folder or a hub name."""
    if model_name.endswith(".pt"):
        saved = m02.load_checkpoint(Path(model_name))
        model = GPT(TrainConfig(**saved["config"]).model_config())
        model.load_state_dict(saved["model"])
    else:
        model = GPT.from_pretrained(model_name)
    model.to(device).eval()
    return hellaswag_evaluate(lambda t: model(t.to(device))[0], load_examples(limit=limit), gpt2_encode(),
                              progress=True, max_len=model.config.block_size)


LADDER = [  # build-nanogpt's speed-ups, each rung adding one to the ones above it
    ("fp32", {"vocab_size": 50257}),
    ("+ TF32", {"vocab_size": 50257, "tf32": True}),
    ("+ bf16 autocast", {"vocab_size": 50257, "tf32": True, "bf16": True}),
    ("+ torch.compile", {"vocab_size": 50257, "tf32": True, "bf16": True, "compile": True}),
    ("+ flash attention", {"vocab_size": 50257, "tf32": True, "bf16": True, "compile": True, "flash": True}),
    ("+ vocab 50,304", {"vocab_size": 50304, "tf32": True, "bf16": True, "compile": True, "flash": True}),
]


def throughput_ladder(preset: str, steps: int, device: str, peak_flops: float | None) -> list[dict]:
    """Tokens/s of the training step (forward, backward, AdamW) at each rung of LADDER, on random tokens; MFU
    from 6 N + 12 L T C flops per token (the PaLM formula) when the accelerator's peak is given."""
    rows = []
    for name, flags in LADDER:
        config = replace(PRESETS[preset], **flags)
        torch.manual_seed(0)
        model = GPT(config.model_config()).to(device)
        optimizer = configure_optimizers(model, config.weight_decay, config.max_lr, device.split(":")[0])
        step_model = torch.compile(model) if config.compile and device.startswith("cuda") else model
        autocast = speed_context(config, device)
        x = torch.randint(50257, (config.micro_batch, config.block_size), device=device)
        times = []
        for _ in range(steps + 2):  # two warm-up steps (compilation, allocator)
            start = time.perf_counter()
            accumulate_gradients(step_model, [(x, x)], autocast)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        tokens_per_s = x.numel() / (sum(times[2:]) / steps)
        flops_per_token = 6 * model.num_params() + 12 * config.n_layer * config.block_size * config.n_embd
        row = {"rung": name, "tokens_per_s": tokens_per_s}
        if peak_flops:
            row["mfu"] = tokens_per_s * flops_per_token / peak_flops
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not device.startswith("cuda"):
            print("(on a CPU only the fp32 rung means anything: the other flags do nothing there)")
            break
    return rows
