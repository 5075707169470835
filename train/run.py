"""The two LLM-QL training stages as library functions; the CLI only builds their configs."""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from llmql.train.attention import prepare, set_route
from llmql.train.collate import (
    ContrastiveExamples,
    QLExamples,
    collate_contrastive,
    collate_ql,
    contrastive_tokens,
    ql_tokens,
)
from llmql.train.core.config import (
    CONFIG_NAME,
    ContrastiveTrainConfig,
    LoraSettings,
    ModelConfig,
    PromptConfig,
    QLTrainConfig,
    load_llmql_config,
    save_llmql_config,
)
from llmql.train.core.device import resolve_device
from llmql.train.core.errors import LLMQLError
from llmql.train.core.model_sources import resolve_model
from llmql.train.core.tokenization import Corruption, PromptTokenizer
from llmql.train.data import (
    BeirData,
    TrainGroup,
    groups_from_qrels,
    load_beir,
    load_training_jsonl,
    read_id_file,
    title_pseudo_queries,
    write_training_jsonl,
)
from llmql.train.distributed import gather_with_grad, process_state
from llmql.train.grad_cache import cached_step
from llmql.train.losses import info_nce, ql_loss
from llmql.train.memory import ModelShape, available_bytes, plan_step
from llmql.train.modeling import BiEncoder, QLModel, build_model_config, load_for_inference
from llmql.train.negatives import mine_negatives
from llmql.train.trainer import fit, latest_checkpoint, remove_checkpoints

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
NEGATIVES_FILE = "negatives.jsonl"


def _check_out(out: Path, resume: bool, model: str) -> None:
    """Refuse to clobber a finished run or silently restart an interrupted one, and a base model that is not
    there, before anything is read or written: a refused run leaves no folder behind (the folder is made only
    once the data and the model have loaded)."""
    if (out / CONFIG_NAME).is_file() and not resume:
        raise LLMQLError(f"{out}: already holds a trained model; choose another --out or delete it")
    if latest_checkpoint(out) is not None and not resume:
        raise LLMQLError(f"{out}: holds an interrupted run; pass --resume to continue it or delete the folder")
    if out.exists() and not out.is_dir():
        raise LLMQLError(f"{out}: is a file, not a folder for the run")
    resolve_model(model)


def _load_base(spec: str, prompts: PromptConfig | None, max_passage_tokens: int, max_query_tokens: int):
    """Weights to train from (a contrastive adapter, if any, merged) and a ModelConfig for the new output.

    Prompts default to those of the source model (an earlier stage), else to the paper's.
    """
    lm, tokenizer, source = load_for_inference(spec, adapter=True)
    path = resolve_model(spec)
    history = load_llmql_config(path)[1] if (path / CONFIG_NAME).is_file() else []
    config = build_model_config(
        tokenizer,
        lm,
        base_model=str(spec),
        prompts=prompts or source.prompts,
        max_passage_tokens=max_passage_tokens,
        max_query_tokens=max_query_tokens,
    )
    return lm, tokenizer, config, history


def _with_lora(lm: torch.nn.Module, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in lm.named_modules()}
    targets = [t for t in lora.target_modules if t in present]
    if not targets:
        raise LLMQLError(f"none of the LoRA target modules {list(lora.target_modules)} exist in this model")
    return get_peft_model(
        lm, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none")
    )


def _training_groups(data: BeirData, train_file: str | None, exclude: set[str]) -> list[TrainGroup]:
    groups = groups_from_qrels(data, exclude) if data.qrels else []
    if train_file:
        groups += [g for g in load_training_jsonl(Path(train_file)) if g.query_id not in exclude]
    if not groups:
        raise LLMQLError("no training queries: the qrels split is empty and no training file was given")
    return groups


def _save_model(lm, tokenizer, config: ModelConfig, out: Path, training, history: list) -> None:
    """Weights and tokenizer first, llmql.json last: a directory without llmql.json is not a finished model."""
    (out / CONFIG_NAME).unlink(missing_ok=True)
    lm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_llmql_config(out, config, training, history)


def train_ql(cfg: QLTrainConfig, resume: bool = False) -> Path:
    """Stage 1: maximise log P(q | d) with Attention Stop and Input Corruption; writes a full model to cfg.out."""
    out = Path(cfg.out)
    _check_out(out, resume, cfg.model)
    data = load_beir(Path(cfg.data), cfg.split)
    groups = _training_groups(data, cfg.train_file, read_id_file(cfg.exclude_queries))
    if cfg.pseudo_queries == "titles":
        groups += title_pseudo_queries(data.corpus)
    pairs = [(g.query, d) for g in groups for d in g.positives]

    lm, tokenizer, config, history = _load_base(cfg.model, cfg.prompts, cfg.max_passage_tokens, cfg.max_query_tokens)
    if cfg.corruption == "token" and config.mask_token_id is None:
        raise LLMQLError("token-level corruption needs a tokenizer that can encode '_'")
    out.mkdir(parents=True, exist_ok=True)
    lm.train()
    if cfg.lora:
        lm = _with_lora(lm, cfg.lora)
    prompt = PromptTokenizer(tokenizer.backend_tokenizer, config)
    rows, length = cfg.optim.batch_size, _longest_passage(prompt) + cfg.max_query_tokens + 1
    plan = _memory_plan(lm, cfg.optim, rows, length, scored=rows * cfg.max_query_tokens, lora=cfg.lora is not None)
    if not plan.fits:
        raise LLMQLError(
            f"a stage-1 step of {rows} passage+query pairs of up to {length} tokens needs {plan.describe()}: "
            "lower --batch-size (and raise --grad-accum to keep the step's size) or --max-passage-tokens"
        )
    if plan.checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    dataset = QLExamples(pairs, prompt, Corruption(cfg.mask_prob, cfg.corruption), cfg.optim.seed)
    route, pack = prepare(lm, cfg.optim.attention, cfg.optim.pack, cfg.optim.compile, _device())
    log.info("stage 1 attention: %s%s", route, f", packed rows of {pack} tokens" if pack else "")

    def loss_fn(module, batch, backward):
        loss = ql_loss(module(**batch), batch["target_mask"])
        backward(loss)
        return loss, ql_tokens(batch)

    result = fit(
        QLModel(lm, cfg.attention_stop, right_padded=True, route=route),  # collate_ql pads on the right
        dataset,
        lambda items: collate_ql(items, config.pad_token_id, cfg.loss_on, pack),
        loss_fn,
        cfg.optim,
        out,
        resume,
        desc="stage 1 (QL)",
    )
    if result.is_main:
        trained = result.module.lm
        set_route(trained, "dense")  # saved and loaded for inference with SDPA
        if cfg.lora:
            trained = trained.merge_and_unload()
        _save_model(trained, tokenizer, config, out, cfg, history)
        remove_checkpoints(out)
        log.info(
            "stage 1 done: %d steps, %.0f tok/s, last loss %.4f",
            result.steps,
            result.tokens_per_second,
            result.last_loss,
        )
    return out


def _longest_passage(prompt: PromptTokenizer) -> int:
    """Tokens of the longest passage a step can hold: the body's limit and the prompt around it."""
    return prompt.config.max_passage_tokens + len(prompt.passages([""], [""])[0])


def _device() -> str:
    """The device this process trains on (accelerate's choice: its LOCAL_RANK GPU, else the CPU)."""

    return resolve_device("auto")


def _memory_plan(lm, optim, rows: int, length: int, chunk: int | None = None, scored: int = 0, lora: bool = False):
    """How the step will fit (llmql.train.memory): as asked, or (said in the log) with GradCache chunks (stage 2
    only) or gradient checkpointing; `fits` False when nothing does."""
    device = _device()
    plan = plan_step(
        ModelShape.of(lm),
        rows,
        length,
        available_bytes(device),
        on_gpu=device != "cpu",
        checkpointing=optim.gradient_checkpointing,
        chunk=chunk,
        can_chunk=scored == 0,
        scored=scored,
        lora=lora,
    )
    changed = (plan.chunk and not chunk) or (plan.checkpointing and not optim.gradient_checkpointing)
    if plan.fits and changed:
        log.warning("the step would not fit in memory as asked; it runs with %s", plan.describe())
    elif plan.fits:
        log.info("step memory: %s", plan.describe())
    return plan


class ContrastiveModel(torch.nn.Module):
    """Both sides in one forward call, so DDP sees a single forward per step."""

    def __init__(self, encoder: BiEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, query_ids=None, query_mask=None, passage_ids=None, passage_mask=None, **packed):
        """Either side may be left out (GradCache encodes them in separate chunks); it is then None. A packed
        batch adds each side's `*_examples`, `*_positions` and `*_last` (`collate_contrastive`)."""
        q = None if query_ids is None else self.encoder(query_ids, query_mask, **_side(packed, "query"))
        p = None if passage_ids is None else self.encoder(passage_ids, passage_mask, **_side(packed, "passage"))
        return q, p


def _side(packed: dict, side: str) -> dict:
    """One side's packing tensors, as `BiEncoder.forward` names them (none for a padded batch)."""
    names = {"examples": "examples", "positions": "position_ids", "last": "last"}
    return {arg: packed[f"{side}_{key}"] for key, arg in names.items() if f"{side}_{key}" in packed}


def contrastive_groups(cfg: ContrastiveTrainConfig, out: Path) -> list[TrainGroup]:
    """Training groups with hard negatives: from --negatives, or mined with BM25 once and kept in OUT."""
    exclude = read_id_file(cfg.exclude_queries)
    if cfg.negatives:
        return [g for g in load_training_jsonl(Path(cfg.negatives)) if g.query_id not in exclude]
    cached = out / NEGATIVES_FILE
    if cached.is_file():
        return [g for g in load_training_jsonl(cached) if g.query_id not in exclude]
    data = load_beir(Path(cfg.data), cfg.split)
    groups = mine_negatives(
        _training_groups(data, None, exclude), data.corpus, per_query=max(cfg.group_size - 1, 15), seed=cfg.optim.seed
    )
    out.mkdir(parents=True, exist_ok=True)
    write_training_jsonl(cached, groups)
    return groups


def _contrastive_loss(group_size: int, temperature: float, chunk: int | None):
    """Stage 2's loss step: InfoNCE over every process's passages, in one pass or, with `chunk`, by GradCache
    (encode without graphs, loss and its gradient on the embeddings, then each chunk re-encoded and backpropagated)."""

    def loss_of(q, p):
        passages, offset = gather_with_grad(p)
        return info_nce(q, passages, group_size, temperature, offset)

    def loss_fn(module, batch, backward):
        tokens = contrastive_tokens(batch)
        queries, passages = (batch["query_ids"], batch["query_mask"]), (batch["passage_ids"], batch["passage_mask"])
        if chunk is None:
            loss = loss_of(*module(**batch))
            backward(loss)
            return loss, tokens
        encode_q = lambda ids, mask: module(query_ids=ids, query_mask=mask)[0]  # noqa: E731
        encode_p = lambda ids, mask: module(passage_ids=ids, passage_mask=mask)[1]  # noqa: E731
        return cached_step(encode_q, encode_p, queries, passages, loss_of, chunk, backward, backward.no_sync), tokens

    return loss_fn


def train_contrastive(cfg: ContrastiveTrainConfig, resume: bool = False) -> Path:
    """Stage 2: InfoNCE bi-encoder. Writes the base weights plus a LoRA adapter (and optionally a merged copy)."""
    out = Path(cfg.out)
    _check_out(out, resume, cfg.model)
    with process_state().main_process_first():  # under torchrun, rank 0 mines and writes; the others read
        groups = contrastive_groups(cfg, out)
    lm, tokenizer, config, history = _load_base(cfg.model, cfg.prompts, cfg.max_passage_tokens, cfg.max_query_tokens)
    out.mkdir(parents=True, exist_ok=True)
    lm.train()
    if cfg.lora:
        lm = _with_lora(lm, cfg.lora)
    prompt = PromptTokenizer(tokenizer.backend_tokenizer, config)
    queries, length = cfg.optim.batch_size, max(_longest_passage(prompt), cfg.max_query_tokens + 16)
    rows = queries * (cfg.group_size + 1)
    plan = _memory_plan(lm, cfg.optim, rows, length, chunk=cfg.grad_cache_chunk, lora=cfg.lora is not None)
    if not plan.fits:
        raise LLMQLError(
            f"a stage-2 step of {queries} queries x {cfg.group_size} passages of up to {length} tokens needs "
            f"{plan.describe()} even so: lower --max-passage-tokens, --group-size or --batch-size"
        )
    if plan.checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.lora:
            lm.enable_input_require_grads()
    dataset = ContrastiveExamples(groups, prompt, cfg.group_size, cfg.optim.seed)
    route, pack = prepare(lm, cfg.optim.attention, cfg.optim.pack, cfg.optim.compile, _device())
    pack = None if plan.chunk else pack  # GradCache re-encodes chunks of padded rows
    log.info("stage 2 attention: %s%s", route, f", packed rows of {pack} tokens" if pack else "")

    result = fit(
        ContrastiveModel(BiEncoder(lm, config.normalize, right_padded=True, route=route)),  # right-padded rows
        dataset,
        lambda items: collate_contrastive(items, config.pad_token_id, pack),
        _contrastive_loss(cfg.group_size, cfg.temperature, plan.chunk),
        cfg.optim,
        out,
        resume,
        desc="stage 2 (contrastive)",
    )
    if result.is_main:
        set_route(result.module.encoder.lm, "dense")  # saved and loaded for inference with SDPA
        _save_contrastive(result.module.encoder.lm, tokenizer, config, out, cfg, history)
        remove_checkpoints(out)
        log.info(
            "stage 2 done: %d steps, %.0f tok/s, last loss %.4f",
            result.steps,
            result.tokens_per_second,
            result.last_loss,
        )
    return out


def _save_contrastive(trained, tokenizer, config: ModelConfig, out: Path, cfg: ContrastiveTrainConfig, history) -> None:
    """The base weights with the LoRA adapter beside them (and, with `merge`, a merged copy), or the full model."""
    (out / CONFIG_NAME).unlink(missing_ok=True)
    if not cfg.lora:
        _save_model(trained, tokenizer, config, out, cfg, history)
        return
    shutil.rmtree(out / ADAPTER_DIR, ignore_errors=True)
    trained.save_pretrained(out / ADAPTER_DIR)
    base = trained.unload()
    _save_model(base, tokenizer, replace(config, adapter=ADAPTER_DIR), out, cfg, history)
    if cfg.merge:
        from peft import PeftModel

        merged = PeftModel.from_pretrained(base, str(out / ADAPTER_DIR)).merge_and_unload()
        _save_model(merged, tokenizer, config, out / MERGED_DIR, cfg, history)
