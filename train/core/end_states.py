"""Per-document [E] states as numpy arrays: what QL scoring needs of a document under Attention Stop.

Torch-free, shared by the PyTorch and ONNX QL scorers and by the QL cache stored in search indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class EndStates:
    keys: np.ndarray  # [N, layers, kv_heads, head_dim] float32, RoPE applied at the [E] position
    values: np.ndarray  # [N, layers, kv_heads, head_dim]
    hidden: np.ndarray  # [N, H] final hidden state of [E] (predicts the first query token)
    positions: np.ndarray  # [N] int64 position of [E]; query positions continue from it

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, index) -> EndStates:
        return EndStates(self.keys[index], self.values[index], self.hidden[index], self.positions[index])

    @staticmethod
    def concat(parts: Sequence[EndStates]) -> EndStates:
        fields = ("keys", "values", "hidden", "positions")
        return EndStates(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))
