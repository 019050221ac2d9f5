"""From rows to batches: encoding with the prompt template, padding, and id-sharded epoch order.

Sampling is by stable id: each epoch is a seeded permutation of the ids cut into global batches, and
worker r of W takes positions r, r+W, ... of each global batch. So every sample is seen once per epoch
whatever W is, and a global batch holds the same ids for 1 or N workers.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    id: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


CHAT = "chat"  # data.template value: the tokenizer's own chat template instead of a format string


def encode_prompt(tokenizer, prompt: str, template: str) -> list[int]:
    if template == CHAT:
        # The chat template writes its own special tokens (bos, role headers) and the assistant's header.
        return tokenizer.chat_prompt_ids(prompt)
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return prefix + tokenizer.encode(template.format(prompt))


def encode_rows(rows: Sequence[dict], tokenizer, template: str, max_len: int) -> dict[int, Encoded]:
    """id -> Encoded for the rows that fit in max_len tokens (the others are dropped; ids never shift)."""
    encoded = {}
    for row in rows:
        prompt_ids = encode_prompt(tokenizer, row["prompt"], template)
        response_ids = tokenizer.encode(row["response"]) + [tokenizer.eos_token_id]
        if len(prompt_ids) + len(response_ids) <= max_len:
            encoded[row["id"]] = Encoded(row["id"], tuple(prompt_ids), tuple(response_ids))
    return encoded


def collate(samples: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids; labels mask the prompt and the padding (loss on response tokens only)."""
    width = max(s.length for s in samples)
    input_ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        tokens = s.prompt_ids + s.response_ids
        input_ids[i, : len(tokens)] = torch.tensor(tokens)
        labels[i, len(s.prompt_ids) : len(tokens)] = torch.tensor(s.response_ids)
        attention[i, : len(tokens)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "ids": torch.tensor([s.id for s in samples], dtype=torch.long),
    }


# Row widths tried when packing, as multiples of the longest sample: wider rows waste less on the last,
# part-filled row but make attention (quadratic in the width) dearer; these keep padding near 10%.
PACK_WIDTHS = (1.0, 1.125, 1.25, 1.375, 1.5)


def _first_fit_decreasing(lengths: Sequence[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, room in enumerate(free):
            if lengths[i] <= room:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(width - lengths[i])
    return rows


def pack_rows(lengths: Sequence[int], width: int | None = None) -> tuple[int, list[list[int]]]:
    """(row width, sample indices per row): first-fit decreasing at `width`, or at the candidate width
    that computes the fewest tokens, padding included (ties: the narrower row)."""
    longest = max(lengths)
    best = None
    for width in [width] if width else [int(longest * factor) for factor in PACK_WIDTHS]:
        rows = _first_fit_decreasing(lengths, width)
        if best is None or len(rows) * width < len(best[1]) * best[0]:
            best = (width, rows)
    return best


def collate_packed(samples: Sequence[Encoded], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Several samples per row, each with its own positions 0..n-1, so the model's causal mask keeps them
    apart (transformers' packed-sequence format: a position that does not follow its left neighbour
    starts a new sequence). Per-sample results equal collate()'s up to float order.

    `segments` maps every token to its sample's index in `samples` (len(samples) for padding); each
    sample's first token is unlabelled, so no sample learns from the one before it in its row.
    `width`: rows of this many tokens (default: pack_rows' choice)."""
    width, rows = pack_rows([s.length for s in samples], width)
    fields = ("input_ids", "position_ids", "labels", "segments")
    columns: dict[str, list[int]] = {name: [] for name in fields}
    for members in rows:  # flat lists, then one buffer for all fields: a step's batch costs little Python
        start = len(columns["input_ids"])
        for i in members:
            s = samples[i]
            columns["input_ids"] += s.prompt_ids + s.response_ids
            columns["position_ids"] += range(s.length)
            # the first token is predicted from the previous sample's last one: never a target
            columns["labels"] += [IGNORE] * max(len(s.prompt_ids), 1) + list(s.response_ids[max(0, 1 - len(s.prompt_ids)):])
            columns["segments"] += [i] * s.length
        padding = width - (len(columns["input_ids"]) - start)
        columns["input_ids"] += [pad_id] * padding
        columns["position_ids"] += range(padding)  # the padding is a sequence of its own
        columns["labels"] += [IGNORE] * padding
        columns["segments"] += [len(samples)] * padding
    buffer = array.array("q", [v for name in fields for v in columns[name]])
    stacked = torch.frombuffer(buffer, dtype=torch.long).view(len(fields), len(rows), width)
    batch = dict(zip(fields, stacked.unbind(0)))
    batch["ids"] = torch.tensor([s.id for s in samples], dtype=torch.long)
    return batch


def epoch_order(ids: Sequence[int], seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    ordered = sorted(ids)
    return [ordered[i] for i in torch.randperm(len(ordered), generator=generator).tolist()]


def global_batches(ids: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(ids, seed, epoch)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def local_share(batch_ids: Sequence[int], rank: int, world_size: int) -> list[int]:
    return list(batch_ids[rank::world_size])


def micro_batches(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


SAFE_SEED_OFFSET = 7919  # the safe set's order is seeded apart from D_ft's


class CyclingIds:
    """An endless seeded sequence of global batches over a small set (the safe set beside D_ft)."""

    def __init__(self, ids: Sequence[int], batch_size: int, seed: int):
        self.ids, self.batch_size, self.seed = list(ids), batch_size, seed
        self.position = 0  # global batches drawn so far; part of a checkpoint

    def next_batch(self) -> list[int]:
        per_pass = max(1, len(self.ids) // self.batch_size)
        pass_index, offset = divmod(self.position, per_pass)
        order = epoch_order(self.ids, self.seed + SAFE_SEED_OFFSET, pass_index)
        self.position += 1
        return order[offset * self.batch_size : (offset + 1) * self.batch_size]


EPOCH_RULES = ("cycle_safe", "zip_shortest")


def selector_steps(ft_ids: Sequence[int], safe: CyclingIds, batch_size: int, seed: int, epoch: int,
                   rule: str) -> Iterator[tuple[list[int], list[int]]]:
    """One selector epoch as (D_ft batch, safe batch) pairs, by the rule of `selector.epoch`.

    cycle_safe: every D_ft batch once, each beside the next batch of the safe set cycled endlessly, so the
    epoch covers D_ft whatever the safe set's size. zip_shortest: the reference code's
    `zip(safe_loader, ft_loader)`: both sets reshuffled each epoch, the epoch ends with the shorter one (a
    safe set of 10% of D_ft makes 10% of the steps)."""
    ft_batches = global_batches(ft_ids, batch_size, seed, epoch)
    if rule == "zip_shortest":
        yield from zip(ft_batches, global_batches(safe.ids, batch_size, safe.seed + SAFE_SEED_OFFSET, epoch))
        return
    if rule != "cycle_safe":
        raise ValueError(f"unknown selector epoch rule '{rule}'; allowed: {', '.join(EPOCH_RULES)}")
    for ft_batch in ft_batches:
        yield ft_batch, safe.next_batch()
