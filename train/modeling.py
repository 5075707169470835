"""The LLM-QL model: loading a causal LM and the forward passes every stage shares.

One implementation each of the QL token log-likelihood (full forward under Attention Stop, or from the cached
[E] states) and of the last-token embedding; training, export and search all call these.

Training rows are right-padded, so attention needs no mask tensor at all: the causal kernel (SDPA is_causal,
FlashAttention on a GPU) already keeps every real token off the padding after it. Attention Stop then takes two
fused passes instead of a dense [B, 1, L, L] mask: one causal pass over the whole row (document states, and [E]'s
keys and values), and the query tokens against [E] alone as a one-position past, exactly the cached-[E] scoring
path (`query_hidden_from_states`). The dense-mask forms stay for left padding, for models with a sliding window
shorter than the row, for stage 1 under gradient checkpointing (which drops the layers' caches), and as the
reference the tests compare with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmql.train.core.config import CONFIG_NAME, ModelConfig, PromptConfig, load_llmql_config
from llmql.train.core.errors import ModelError
from llmql.train.core.model_sources import resolve_model
from llmql.train.losses import target_logprobs
from llmql.train.masks import (
    attention_stop_mod,
    block_mask,
    causal_padding_mask,
    dense,
    position_ids_from_mask,
    row_examples,
)
from llmql.train.pooling import last_token_index, last_token_pool, pool_at

log = logging.getLogger(__name__)


def load_tokenizer(path: Path):
    """A fast (Rust) tokenizer: the ONNX runtime and sync need its tokenizer.json."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise ModelError(f"{path}: cannot load a tokenizer ({err})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{path}: llmql needs a fast tokenizer (tokenizer.json)")
    if tokenizer.eos_token_id is None:
        raise ModelError(f"{path}: the tokenizer has no EOS token; LLM-QL uses EOS as the end token [E]")
    return tokenizer


def load_causal_lm(path: Path, dtype: torch.dtype = torch.float32):
    """Any Hugging Face causal LM directory, with SDPA attention (it takes llmql's explicit 4-D masks)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (Path(path) / "config.json").is_file():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{path}: cannot load as a causal LM ({err})") from None
    if config.is_encoder_decoder:
        raise ModelError(f"{path}: {config.model_type} is not a decoder-only model")
    return model


def build_model_config(
    tokenizer,
    lm,
    base_model: str,
    prompts: PromptConfig | None = None,
    max_passage_tokens: int = 200,
    max_query_tokens: int = 200,
) -> ModelConfig:
    """Derive the token ids llmql needs from a tokenizer; nothing is assumed about a model family."""
    end = tokenizer.eos_token_id
    if end is None:
        raise ModelError(f"{base_model}: the tokenizer has no EOS token")
    probe = tokenizer("x").input_ids
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id else None
    mask_ids = tokenizer.backend_tokenizer.encode("_", add_special_tokens=False).ids
    return ModelConfig(
        base_model=base_model,
        end_token_id=int(end),
        pad_token_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end),
        bos_token_id=None if bos is None else int(bos),
        mask_token_id=int(mask_ids[-1]) if mask_ids else None,
        embedding_dim=int(lm.config.get_text_config().hidden_size),
        prompts=prompts or PromptConfig(),
        max_passage_tokens=max_passage_tokens,
        max_query_tokens=max_query_tokens,
    )


def _inner(lm: nn.Module) -> nn.Module:
    """The plain transformers model under a peft wrapper (LoRA layers stay injected in it)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def decoder_of(lm: nn.Module) -> nn.Module:
    return _inner(lm).get_decoder()


def logits_from_hidden(lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Apply the LM head (and Gemma's final logit soft-capping where configured)."""
    inner = _inner(lm)
    logits = inner.get_output_embeddings()(hidden)
    cap = getattr(inner.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def causal_kernel_fits(lm: nn.Module, length: int) -> bool:
    """Whether a right-padded row of `length` can run with no mask: the model's attention is SDPA or
    FlashAttention and no sliding window is shorter than the row (such layers would see less than the
    explicit mask lets them)."""
    config = _inner(lm).config
    text = config.get_text_config()
    window = getattr(text, "sliding_window", None)
    kernel = config._attn_implementation in ("sdpa", "flash_attention_2", "flash_attention_3")
    return kernel and (window is None or window >= length)


def causal_states(lm: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states [B, L, H] of right-padded rows under plain causal attention, with no mask tensor. The
    all-ones 2D mask is what makes transformers hand the kernel no mask (SDPA's is_causal, FlashAttention):
    given none, it reads the position ids as possibly packed rows and builds a [B, 1, L, L] mask through vmap
    on every call (host time on the CPU, 0.98-1.06x in bench.causal_mask; off FlashAttention on a GPU)."""
    ones = torch.ones_like(input_ids)
    return decoder_of(lm)(input_ids=input_ids, attention_mask=ones, use_cache=False).last_hidden_state


def attention_bias(allowed: torch.Tensor, lm: nn.Module) -> torch.Tensor:
    """Boolean [B, 1, Lq, Lk] -> the form the attention implementation takes (bool for SDPA, additive else)."""
    if _inner(lm).config._attn_implementation == "sdpa":
        return allowed
    dtype = next(lm.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def masked_states(lm: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor, mod, route: str) -> torch.Tensor:
    """Final hidden states [B, L, H] under the mask predicate `mod` (`llmql.train.masks`): as a FlexAttention
    BlockMask on the `flex` route (the model's attention set to FlexAttention), else as a dense mask."""
    batch, length = input_ids.shape
    if route == "flex":
        mask = block_mask(mod, batch, length, input_ids.device)
    else:
        mask = attention_bias(dense(mod, batch, length, input_ids.device), lm)
    return decoder_of(lm)(
        input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: query likelihood
# ---------------------------------------------------------------------------------------------------------------
class QLModel(nn.Module):
    """Token log-likelihoods of a QL sequence `<bos> passage prompt [E] query <eos>` under Attention Stop.

    `route` (`llmql.train.attention`): `dense` or `flex`, the Attention Stop predicate as a mask tensor or a
    FlexAttention BlockMask, over padded or packed rows alike; `two-pass`, the two mask-free passes of the module
    docstring, for one example per right-padded row (`right_padded`), falling back to `dense` for a short sliding
    window or under gradient checkpointing. Without Attention Stop a right-padded batch is one causal pass."""

    def __init__(self, lm: nn.Module, attention_stop: bool = True, right_padded: bool = False, route: str = "dense"):
        super().__init__()
        self.lm = lm
        self.attention_stop = attention_stop
        self.right_padded = right_padded
        self.route = route

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        end_positions: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        examples: torch.Tensor | None = None,
        ends: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, target_mask [B, L]; end_positions [B] -> log P(token) [B, L]. A packed
        batch (`collate_ql` with `pack_tokens`) gives instead `examples`, `ends` and `position_ids` [B, L].

        target_mask marks the tokens to predict (each from the state just before it); other entries are 0.
        The LM head runs only on the positions that predict a target, which saves most of its cost.
        """
        packed = examples is not None
        if not packed:
            examples = row_examples(attention_mask)
            ends = end_positions.view(-1, 1).expand_as(input_ids)
            position_ids = position_ids_from_mask(attention_mask)
        if not packed and self._mask_free(input_ids):
            hidden = self._fused_hidden(input_ids, attention_mask, end_positions)
        else:
            mod = attention_stop_mod(examples, ends, stop=self.attention_stop)
            hidden = masked_states(self.lm, input_ids, position_ids, mod, self.route)
        predict = target_mask[:, 1:].bool()  # token t is predicted from position t - 1
        logprobs = target_logprobs(logits_from_hidden(self.lm, hidden[:, :-1][predict]), input_ids[:, 1:][predict])
        out = torch.zeros(input_ids.shape, dtype=logprobs.dtype, device=input_ids.device)
        out[:, 1:][predict] = logprobs
        return out

    def _mask_free(self, input_ids: torch.Tensor) -> bool:
        """Whether this right-padded batch runs with no mask: causally without Attention Stop (costs nothing
        anywhere), or as two passes when that route was chosen (its second pass reads the layers' caches, which
        gradient checkpointing drops)."""
        checkpointing = self.training and getattr(_inner(self.lm), "is_gradient_checkpointing", False)
        wanted = not self.attention_stop or self.route == "two-pass"
        return wanted and self.right_padded and causal_kernel_fits(self.lm, input_ids.shape[1]) and not checkpointing

    def _fused_hidden(self, input_ids, attention_mask, end_positions) -> torch.Tensor:
        """[B, L, H] final states under Attention Stop (or plain causal attention) with no mask tensor; the
        states of padding positions are left undefined (nothing reads them)."""
        from transformers import DynamicCache

        if not self.attention_stop:
            return causal_states(self.lm, input_ids)
        length = input_ids.shape[1]
        keep = int(end_positions.max()) + 1  # the causal pass stops at the last [E]: no row needs more of it
        out = decoder_of(self.lm)(input_ids=input_ids[:, :keep], past_key_values=DynamicCache(), use_cache=True)
        states = end_states_at(out, end_positions, end_positions)
        document = torch.nn.functional.pad(out.last_hidden_state, (0, 0, 0, length - keep))
        steps = int((attention_mask.sum(1) - 1 - end_positions).max())  # the longest query (its tokens and EOS)
        if steps <= 0:
            return document
        t = torch.arange(steps, device=input_ids.device)
        fed = input_ids.gather(1, (end_positions.view(-1, 1) + 1 + t).clamp(max=length - 1))
        query = query_hidden_from_states(self.lm, fed, states)  # [B, steps, H]
        after = torch.arange(length, device=input_ids.device).view(1, -1) - end_positions.view(-1, 1) - 1
        picked = query.gather(1, after.clamp(0, steps - 1).unsqueeze(-1).expand(-1, -1, query.shape[-1]))
        return torch.where((after >= 0).unsqueeze(-1), picked, document)


@dataclass
class EndStateTensors:
    """What a query needs of a document under Attention Stop: [E]'s key/value in every layer, its final hidden
    state (which predicts the first query token) and its position (query positions continue from it)."""

    keys: torch.Tensor  # [B, layers, kv_heads, head_dim] (RoPE already applied, as cached by the model)
    values: torch.Tensor  # [B, layers, kv_heads, head_dim]
    hidden: torch.Tensor  # [B, H]
    positions: torch.Tensor  # [B] int64


def end_states_at(out, index: torch.Tensor, positions: torch.Tensor) -> EndStateTensors:
    """[E]'s states at `index` [B] of a decoder output run with a DynamicCache, its RoPE position `positions`."""
    rows = torch.arange(index.shape[0], device=index.device)
    layers = out.past_key_values.layers
    keys = torch.stack([layer.keys[rows, :, index] for layer in layers], dim=1)
    values = torch.stack([layer.values[rows, :, index] for layer in layers], dim=1)
    return EndStateTensors(keys, values, out.last_hidden_state[rows, index], positions)


def compute_end_states(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EndStateTensors:
    """Run the passage prompt (ending in [E]) once and keep only [E]'s states."""
    from transformers import DynamicCache

    cache = DynamicCache()  # plain layers: a sliding-window layer would drop [E] from long prompts
    positions = position_ids_from_mask(attention_mask)
    out = decoder_of(lm)(
        input_ids=input_ids,
        attention_mask=attention_bias(causal_padding_mask(attention_mask), lm),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    index = last_token_index(attention_mask)
    return end_states_at(out, index, positions[torch.arange(input_ids.shape[0], device=index.device), index])


def query_hidden_from_states(lm: nn.Module, fed_ids: torch.Tensor, states: EndStateTensors) -> torch.Tensor:
    """Final states [B, T, H] of query tokens fed_ids [B, T] run at positions e+1, e+2, ... against [E] alone
    (the one cached position is the past; each token also sees the query tokens before it).

    RoPE depends only on relative position, so this equals the full forward pass under Attention Stop.
    """
    from transformers import DynamicCache

    batch, steps = fed_ids.shape
    cache = DynamicCache(
        ddp_cache_data=[
            (states.keys[:, i].unsqueeze(2), states.values[:, i].unsqueeze(2)) for i in range(states.keys.shape[1])
        ]
    )
    t = torch.arange(steps, device=fed_ids.device)
    allowed = t.view(1, 1, steps, 1) + 1 >= torch.arange(steps + 1, device=fed_ids.device).view(1, 1, 1, -1)
    return decoder_of(lm)(
        input_ids=fed_ids,
        attention_mask=attention_bias(allowed.expand(batch, 1, steps, steps + 1), lm),
        position_ids=states.positions.view(-1, 1) + 1 + t.view(1, -1),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state


def query_logprobs_from_states(lm: nn.Module, query_ids: torch.Tensor, states: EndStateTensors) -> torch.Tensor:
    """log P(q_t | [E], q_<t) for query_ids [B, T] (query tokens then EOS, so T >= 2), from cached [E] states ->
    [B, T]. Exported as the QL query graph, so nothing here branches or loops over a size: the [B * T, V] logits
    are bounded by the caller, which passes fewer candidates a call (`llmql.train.core.ql_base.candidates_per_call`)."""
    fed = query_hidden_from_states(lm, query_ids[:, :-1], states)  # the last token (EOS) is only predicted
    hidden = torch.cat([states.hidden.unsqueeze(1), fed], dim=1)  # [B, T, H]: [E] predicts the first token
    return target_logprobs(logits_from_hidden(lm, hidden).flatten(0, 1), query_ids.flatten()).view_as(query_ids)


# ---------------------------------------------------------------------------------------------------------------
# Stage 2: bi-encoder
# ---------------------------------------------------------------------------------------------------------------
class BiEncoder(nn.Module):
    """Shared-weight encoder: final-layer state of the last ([E]) token, L2-normalised. Causal attention;
    `right_padded` inputs (training's collation) run on the causal kernel with no mask tensor; packed rows
    (several texts a row, `collate_contrastive` with `pack_tokens`) under a per-text causal mask on `route`."""

    def __init__(self, lm: nn.Module, normalize: bool = True, right_padded: bool = False, route: str = "dense"):
        super().__init__()
        self.lm = lm
        self.normalize = normalize
        self.right_padded = right_padded
        self.route = route

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        right_padded: bool | None = None,
        examples: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        last: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask [B, L] (left or right padded) -> [B, H]; `right_padded` (None: the module's
        setting) says the rows are right-padded, so no mask tensor is needed. Packed: `examples` and
        `position_ids` [B, L] and `last` [N, 2] (row, column of each text's [E]) -> [N, H] in text order."""
        if examples is not None:
            mod = attention_stop_mod(examples, examples, stop=False)
            hidden = masked_states(self.lm, input_ids, position_ids, mod, self.route)
            return pool_at(hidden, last, normalize=self.normalize)
        right = self.right_padded if right_padded is None else right_padded
        if right and causal_kernel_fits(self.lm, input_ids.shape[1]):
            hidden = causal_states(self.lm, input_ids)
        else:
            hidden = decoder_of(self.lm)(
                input_ids=input_ids,
                attention_mask=attention_bias(causal_padding_mask(attention_mask), self.lm),
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            ).last_hidden_state
        return last_token_pool(hidden, attention_mask, normalize=self.normalize)


# ---------------------------------------------------------------------------------------------------------------
# Loading a directory for inference
# ---------------------------------------------------------------------------------------------------------------
def load_for_inference(spec: str | Path, adapter: bool = True):
    """(lm, tokenizer, ModelConfig) for a model name, GGUF, plain causal LM directory or llmql output.

    adapter=True merges the contrastive LoRA (the retriever); adapter=False leaves the stage-1 base (the QL scorer).
    """

    path = resolve_model(spec)
    tokenizer = load_tokenizer(path)
    lm = load_causal_lm(path)
    if (path / CONFIG_NAME).is_file():
        config, _ = load_llmql_config(path)
    else:
        config = build_model_config(tokenizer, lm, base_model=str(spec))
    if adapter and config.adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(path / config.adapter)).merge_and_unload()
    lm.eval()
    return lm, tokenizer, config
