"""LoRA adapters with random, non-zero weights: for tests and benchmarks of serving.

A LoRA straight from initialisation has B = 0 and changes nothing, so it proves nothing about
an engine applying adapters; these change the model's answers.
"""

from __future__ import annotations

from pathlib import Path


def make_lora(base_model: Path, out_dir: Path, *, seed: int, scale: float = 0.3) -> Path:
    """Save a rank-8 LoRA on the attention and MLP projections, seeded, to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft_model.save_pretrained(str(out_dir))
    return out_dir
