"""A local Hugging Face ``transformers`` chat model (the paper used Meta-Llama-3-8B-Instruct).

Optional: ``pip install 'itaclip[llm]'``. ``transformers`` is imported only when this backend is
built, so the rest of itaclip never needs it.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from ..engine.errors import ItaclipError

DTYPES = ("auto", "float32", "float16", "bfloat16")


class TransformersChat:
    """Chat completions from a local instruct model, with its own chat template.

    Args:
        model: a local model directory (or a Hub id already in the local cache).
        device: ``cuda``, ``cuda:N``, ``cpu``, ``mps``; ``None`` → cuda if available.
        dtype: weights dtype; ``auto`` → bfloat16 on a GPU, float32 on the CPU.
        local_files_only: never download (default); set False to let ``transformers`` fetch.
    """

    def __init__(
        self,
        model: str,
        *,
        device: Optional[str] = None,
        dtype: str = "auto",
        local_files_only: bool = True,
    ) -> None:
        try:
            import transformers  # noqa: F401  (lazy: optional extra)
        except ImportError:
            raise ItaclipError(
                "the transformers backend needs the 'transformers' package: pip install 'itaclip[llm]' "
                "(or use --backend openai with a local server, or --backend wordnet)"
            ) from None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..engine.devices import resolve_device

        if dtype not in DTYPES:
            raise ItaclipError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.device = resolve_device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        model = os.path.expanduser(model)
        self.model_name = model
        looks_like_path = model.startswith((".", os.sep)) or bool(os.path.splitdrive(model)[0])
        if looks_like_path and not os.path.isdir(model):
            raise ItaclipError(f"model directory {model} does not exist")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=local_files_only)
            self.model = AutoModelForCausalLM.from_pretrained(
                model, torch_dtype=torch_dtype, local_files_only=local_files_only
            ).to(self.device)
        except (OSError, ValueError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ItaclipError(f"cannot load the model {model}: {first_line}") from None
        self.model.eval()
        if not getattr(self.tokenizer, "chat_template", None):
            raise ItaclipError(f"{model} has no chat template: use an instruct/chat model")
        # Stop at the end of the assistant's turn: eos, and Llama 3's <|eot_id|> when it exists.
        stops = {self.tokenizer.eos_token_id}
        eot = self.tokenizer.convert_tokens_to_ids("<|eot_id|>")
        if isinstance(eot, int) and eot != getattr(self.tokenizer, "unk_token_id", None):
            stops.add(eot)
        self.stop_ids = sorted(i for i in stops if isinstance(i, int))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]

    def describe(self) -> str:
        return f"transformers model {self.model_name} on {self.device}"

    def complete(
        self,
        messages: Sequence[dict],
        *,
        temperature: float,
        top_p: float,
        max_tokens: int,
        seed: Optional[int] = None,
    ) -> str:
        import torch

        prompt = self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        # The template already holds the special tokens (BOS): do not add them twice.
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        if seed is not None:
            torch.manual_seed(seed)
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        else:
            sampling = {"do_sample": False}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **sampling,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)
