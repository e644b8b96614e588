"""A thin wrapper over a Hugging Face tokenizer, so the server never imports transformers.

Both engine environments (the main one and vLLM's) have transformers, so one class serves both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Tokenizer:
    def __init__(self, hf_tokenizer: Any) -> None:
        self._tok = hf_tokenizer

    @classmethod
    def from_pretrained(cls, path: str, trust_remote_code: bool = False) -> Tokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code))

    @classmethod
    def from_gguf(cls, file: Path) -> Tokenizer:
        """The tokenizer transformers builds from a GGUF file's metadata (vocabulary, merges, template)."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name))

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def eos_token_id(self) -> int | None:
        return self._tok.eos_token_id

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tok, "chat_template", None))

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token's own text (as OpenAI's logprobs show it), decoded one by one."""
        return [self._tok.decode([i]) for i in ids]

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(out["input_ids"])
