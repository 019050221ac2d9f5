"""A character-level tokenizer for the mini world, saved beside the model like a transformers one.

It offers the small surface the pipeline uses of any tokenizer (encode, decode, pad/eos ids,
save_pretrained/from_pretrained), so a real AutoTokenizer can take its place (see models.py).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

FILE_NAME = "char_tokenizer.json"


class CharTokenizer:
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    unk_token_id = 3
    _specials = 4

    def __init__(self, alphabet: str | None = None):
        self.alphabet = alphabet if alphabet is not None else "\n" + "".join(c for c in string.printable if c.isprintable())
        self._index = {ch: i + self._specials for i, ch in enumerate(self.alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + self._specials

    def encode(self, text: str) -> list[int]:
        return [self._index.get(ch, self.unk_token_id) for ch in text]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        chars = []
        for i in ids:
            if i >= self._specials:
                chars.append(self.alphabet[i - self._specials])
            elif not skip_special_tokens:
                chars.append(f"<{i}>")
        return "".join(chars)

    def save_pretrained(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / FILE_NAME).write_text(json.dumps({"alphabet": self.alphabet}))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "CharTokenizer":
        return cls(json.loads((Path(directory) / FILE_NAME).read_text())["alphabet"])

    @staticmethod
    def is_saved_in(directory: str | Path) -> bool:
        return (Path(directory) / FILE_NAME).is_file()
