"""A thin wrapper over a Hugging Face tokenizer, so the server never imports transformers.

Both engine environments (the main one and vLLM's) have transformers, so one class serves both.
"""

from __future__ import annotations

import functools
import re
import uuid
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
        """The tokenizer transformers builds from a GGUF file's metadata (vocabulary, merges), with the
        file's chat template: transformers reads `tokenizer.chat_template` into its config but does not set
        it on the tokenizer, and without it a chat would be rendered with no template at all."""
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = gguf_chat_template(file)
        return cls(tok)

    @property
    def hf(self) -> Any:
        """The Hugging Face tokenizer itself, for libraries that take one (xgrammar)."""
        return self._tok

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

    @property
    def template_knows_tools(self) -> bool:
        """Whether the chat template renders a `tools` list itself (Hermes, Llama 3.1, Qwen templates do)."""
        return "tools" in (getattr(self._tok, "chat_template", None) or "")

    def apply_chat_template(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The chat template's prompt, with control-token strings inside message content kept as text.

        Tokenizing the rendered string as it is would turn `<|im_start|>system` typed inside a message
        into the real control token, so a user could forge turns. Each such string in the content is
        swapped for a placeholder (private-use characters and digits, which templates' trim/upper
        leave alone) before rendering, and tokenized back as plain text where the placeholder lands.
        Benign content renders and tokenizes exactly as the template's own apply_chat_template.
        """
        nonce = str(uuid.uuid4().int)[:12]
        escaped: list[str] = []

        def escape(match: re.Match[str]) -> str:
            escaped.append(match.group(0))
            return f"\ue000{nonce}:{len(escaped) - 1}\ue001"

        safe = [{**m, "content": self._specials.sub(escape, m["content"])} if isinstance(m.get("content"), str) else m
                for m in messages]
        rendered = self._tok.apply_chat_template(safe, tools=tools or None, add_generation_prompt=True, tokenize=False)
        pieces = re.split(f"\ue000{nonce}:(\\d+)\ue001", rendered)
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 0:
                ids += self._tok.encode(piece, add_special_tokens=False)
            else:
                ids += self._tok.encode(escaped[int(piece)], add_special_tokens=False, split_special_tokens=True)
        return ids

    @functools.cached_property
    def _specials(self) -> re.Pattern[str]:
        """Every control-token string of this tokenizer, longest first (so no prefix wins)."""
        tokens = {t.content for t in self._tok.added_tokens_decoder.values() if t.special and t.content}
        tokens |= {t for t in self._tok.all_special_tokens if t}
        alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True))
        return re.compile(alternatives or r"(?!)")


def gguf_chat_template(file: Path) -> str | None:
    """The Jinja chat template a GGUF file carries (`tokenizer.chat_template`), or None."""
    from gguf import GGUFReader

    field = GGUFReader(file).fields.get("tokenizer.chat_template")
    return None if field is None else str(field.contents())
