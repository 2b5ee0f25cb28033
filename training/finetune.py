"""Train the two fine-tunes of an offline preset: LoRA adapters on its base, one per Turkish task.

    python -m training.finetune --task qa              # Model 1: question -> a human's one-sentence answer
    python -m training.finetune --task instructions    # Model 2: instruction (+ input) -> a fuller response
    python -m training.finetune --task qa --evaluate   # recompute the card's losses from the committed adapter
    python -m training.finetune --lengths 30           # Model 1's and Model 2's mean answer length, held-out
    python -m training.finetune --preset smollm2 ...   # the same for the SmolLM2 pair

The preset says the base, where each adapter lives (its model1/model2 ``lora:`` source) and the prompt format
that both training and the app use. Each run writes the adapter (safetensors), ``training.json`` (data files and
their hashes, steps, learning rate, rank, time, and the training and held-out loss of the base and of the
fine-tune) and a README card.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

from prompts import formats

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "prompts" / "data"

# A handful of named values, as in nanoGPT: small enough to train both adapters on 2 CPU cores in well
# under an hour, large enough that each adapter clearly learns its task's style.
# The instruction set's longer answers cost about three times as much per step, so it trains one epoch at a
# higher rate; both adapters were trained with exactly these values.
TASKS = {
    "qa": {"role": "model1", "train": "qa_train.tsv", "heldout": "qa_heldout.tsv", "epochs": 2,
           "learning_rate": 3e-4},
    "instructions": {"role": "model2", "train": "instructions_train.tsv", "heldout": "instructions_heldout.tsv",
                     "epochs": 1, "learning_rate": 4e-4},
}
RANK = 8
ALPHA = 16
DROPOUT = 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BATCH_SIZE = 8
MAX_LENGTH = 160
SEED = 0
TRAIN_LOSS_EVERY = 4  # the card's training loss is taken on every 4th training row, to keep runs short


def read_pairs(task: str, split: str) -> list[tuple[str, str]]:
    """(user message, answer) pairs of a task's split, from the seed-format TSV files."""
    path = DATA / TASKS[task][split]
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task == "qa":
        return [(r["soru"], r["insan"]) for r in rows]
    return [(r["talimat"] + (f"\n\n{r['giris']}" if r["giris"].strip() else ""), r["cikti"]) for r in rows]


def encode(tokenizer, prompt_format: str, user: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end of text, and labels that score the answer only.

    The prompt is the one the app builds (prompts/formats.py), so the fine-tune learns to answer exactly where
    the app asks it to, and to end its answer with the tokenizer's end-of-text token.
    """
    prompt_ids = formats.build(prompt_format, user, tokenizer, max_context=10**6, max_new_tokens=0).ids
    # A chat template ends its prompt at a new line; a plain "Cevap:" is followed by a space.
    text = answer if prompt_format == "chat_template" else " " + answer
    answer_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:MAX_LENGTH]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:MAX_LENGTH]
    return ids, labels


def batches(examples, batch_size: int, pad_id: int):
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (i, l) in enumerate(chunk):
            ids[row, :len(i)] = torch.tensor(i)
            labels[row, :len(l)] = torch.tensor(l)
            mask[row, :len(i)] = 1
        yield ids, labels, mask


def answer_loss(model, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the answer tokens, with the vocabulary head applied only where an answer token is
    predicted: with Gemma's 262k-token head, logits for every prompt and padding position would cost more than
    the rest of the model."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = causal_lm.lm_head(hidden[keep]).float()
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, target[keep], reduction=reduction)


@torch.inference_mode()
def mean_loss(model, examples, pad_id: int, desc: str = "loss") -> float:
    """Token-weighted mean cross-entropy of the answers."""
    model.eval()
    total, count = 0.0, 0
    for ids, labels, mask in tqdm(list(batches(examples, 16, pad_id)), desc=desc, leave=False):
        total += answer_loss(model, ids, labels, mask, reduction="sum").item()
        count += int((labels[:, 1:] != -100).sum())
    return total / count


def losses(model, train_set, heldout_set, pad_id: int, who: str) -> dict:
    return {"train": mean_loss(model, train_set[::TRAIN_LOSS_EVERY], pad_id, f"{who} train loss"),
            "heldout": mean_loss(model, heldout_set, pad_id, f"{who} held-out loss")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapter_dir(preset, task: str) -> Path:
    from models import sources

    source = getattr(preset, TASKS[task]["role"])
    if not source.startswith(sources.LORA):
        raise SystemExit(f"preset {preset.name!r}: {TASKS[task]['role']} is {source!r}, not a lora: adapter to train")
    return ROOT / source[len(sources.LORA):]


def load_base(preset):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models import sources

    folder = sources.folder_of(preset.base)
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _command(preset) -> str:
    """How to rerun this script for the preset, as the cards record it."""
    return "python -m training.finetune" + ("" if preset.name == "default" else f" --preset {preset.name}")


def encoded(preset, tokenizer, task: str, split: str):
    return [encode(tokenizer, preset.prompt_format, u, a) for u, a in read_pairs(task, split)]


def train(preset, task: str, epochs: int, learning_rate: float) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(SEED)
    model, tokenizer = load_base(preset)
    pad_id = _pad_id(tokenizer)
    train_set, heldout_set = encoded(preset, tokenizer, task, "train"), encoded(preset, tokenizer, task, "heldout")
    base_losses = losses(model, train_set, heldout_set, pad_id, "base")
    print(f"base loss: train {base_losses['train']:.4f}, held-out {base_losses['heldout']:.4f}")

    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS,
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    steps = epochs * math.ceil(len(train_set) / BATCH_SIZE)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    order = random.Random(SEED)
    started = time.time()
    with tqdm(total=steps, desc=f"LoRA {task}") as bar:
        for _ in range(epochs):
            model.train()
            examples = train_set[:]
            order.shuffle(examples)
            for ids, labels, mask in batches(examples, BATCH_SIZE, pad_id):
                loss = answer_loss(model, ids, labels, mask)
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    seconds = time.time() - started
    out = adapter_dir(preset, task)
    model.save_pretrained(out)
    _scrub_adapter_config(out, preset.base)
    tuned = losses(model, train_set, heldout_set, pad_id, "fine-tune")
    print(f"fine-tune loss: train {tuned['train']:.4f}, held-out {tuned['heldout']:.4f}")
    record = {
        "task": task,
        "preset": preset.name,
        "base": preset.base,
        "prompt_format": preset.prompt_format,
        "command": f"{_command(preset)} --task {task}",
        "data": {split: {"file": f"prompts/data/{TASKS[task][split]}",
                         "sha256": sha256(DATA / TASKS[task][split]),
                         "rows": len(train_set if split == "train" else heldout_set)}
                 for split in ("train", "heldout")},
        "rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "target_modules": TARGETS,
        "learning_rate": learning_rate, "epochs": epochs, "batch_size": BATCH_SIZE, "steps": steps,
        "max_length": MAX_LENGTH, "seed": SEED, "train_loss_every": TRAIN_LOSS_EVERY,
        "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        "loss": {"base": base_losses, "finetune": tuned},
    }
    write_card(out, record)
    return record


def write_card(out: Path, record: dict) -> None:
    (out / "training.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_card(record), encoding="utf-8")


def _scrub_adapter_config(folder: Path, base_source: str) -> None:
    # peft records the base's local cache path; the repository names the portable source instead.
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_source
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _card(r: dict) -> str:
    lb, lf = r["loss"]["base"], r["loss"]["finetune"]
    lengths = r.get("answer_words")
    length_line = "" if not lengths else (
        f"\nMean words per greedy answer on held-out prompts (`{lengths['command']}`, {lengths['questions']} "
        f"questions, at most {lengths['max_new_tokens']} new tokens): this adapter {lengths['self']:.1f}, "
        f"the other one {lengths['other']:.1f}.\n")
    terms = ("\nThe base is Gemma 3; this adapter is a model derivative under the Gemma Terms of Use "
             "(see NOTICE at the repository root).\n" if "gemma" in r["base"].lower() else "")
    return f"""# harman adapter: {r['task']} (preset `{r['preset']}`)

LoRA adapter on `{r['base']}`, trained by `{r['command']}` with the `{r['prompt_format']}` prompt format
(the one the app asks it in).
{terms}
| data | file | rows | sha256 |
|---|---|---|---|
| train | `{r['data']['train']['file']}` | {r['data']['train']['rows']} | `{r['data']['train']['sha256'][:16]}…` |
| held-out | `{r['data']['heldout']['file']}` | {r['data']['heldout']['rows']} | `{r['data']['heldout']['sha256'][:16]}…` |

rank {r['rank']}, alpha {r['alpha']}, dropout {r['dropout']}, targets {', '.join(r['target_modules'])};
learning rate {r['learning_rate']} (linear decay), {r['epochs']} epochs, batch {r['batch_size']}, {r['steps']} steps,
seed {r['seed']}; trained in {r['train_seconds']} s on {r.get('threads', 2)} CPU threads.

| answer loss (mean token cross-entropy) | train (every {TRAIN_LOSS_EVERY}th row) | held-out |
|---|---|---|
| base | {lb['train']:.4f} | {lb['heldout']:.4f} |
| fine-tune | {lf['train']:.4f} | {lf['heldout']:.4f} |
{length_line}
Reproduce these numbers from the committed adapter: `{r['command']} --evaluate`.
"""


def evaluate(preset, task: str) -> dict:
    """Recompute the card's losses from the committed adapter and the data files."""
    from peft import PeftModel

    model, tokenizer = load_base(preset)
    pad_id = _pad_id(tokenizer)
    train_set, heldout_set = encoded(preset, tokenizer, task, "train"), encoded(preset, tokenizer, task, "heldout")
    base = losses(model, train_set, heldout_set, pad_id, "base")
    tuned = losses(PeftModel.from_pretrained(model, adapter_dir(preset, task)), train_set, heldout_set, pad_id,
                   "fine-tune")
    card = json.loads((adapter_dir(preset, task) / "training.json").read_text(encoding="utf-8"))["loss"]
    print(f"{'':10} {'train':>8} {'held-out':>9}   (card: train, held-out)")
    for name, got in (("base", base), ("finetune", tuned)):
        print(f"{name:10} {got['train']:8.4f} {got['heldout']:9.4f}   "
              f"({card[name]['train']:.4f}, {card[name]['heldout']:.4f})")
    return {"base": base, "finetune": tuned}


def answer_lengths(preset, rows_per_task: int, max_new_tokens: int, write: bool = False) -> dict:
    """Mean words of Model 1's and Model 2's greedy answers to the held-out questions of both tasks; with
    ``write``, recorded on both adapters' cards."""
    from models import model_set
    from serving.generation import generate, greedy_settings

    ms = model_set.load(preset)
    words = {"model1": [], "model2": []}
    questions = [u for task in TASKS for u, _ in read_pairs(task, "heldout")[:rows_per_task]]
    for question in tqdm(questions, desc="greedy answers"):
        prompt = formats.build(preset.prompt_format, question, ms.tokenizer, ms.max_context, max_new_tokens)
        settings = greedy_settings(prompt, max_new_tokens)
        results = generate(ms.bank, list(words), prompt.ids, settings, {}, tokenizer=ms.tokenizer)
        for variant, result in results.items():
            words[variant].append(len(result.text.split()))
    means = {v: sum(w) / len(w) for v, w in words.items()}
    print(f"held-out questions: {len(questions)}; mean words per greedy answer (max {max_new_tokens} tokens): "
          f"Model 1 {means['model1']:.1f}, Model 2 {means['model2']:.1f}")
    if write:
        command = f"{_command(preset)} --lengths {rows_per_task}"
        for task, spec in TASKS.items():
            folder = adapter_dir(preset, task)
            record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
            other = "model2" if spec["role"] == "model1" else "model1"
            record["answer_words"] = {"self": round(means[spec["role"]], 1), "other": round(means[other], 1),
                                      "questions": len(questions), "max_new_tokens": max_new_tokens,
                                      "command": command}
            write_card(folder, record)
    return means


def main(argv=None) -> None:
    from models import presets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=presets.DEFAULT_PRESET, help="an offline preset whose model1/model2 "
                        "are lora: adapters (default: %(default)s)")
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--epochs", type=int, help="default: the task's own (see TASKS)")
    parser.add_argument("--learning-rate", type=float, help="default: the task's own (see TASKS)")
    parser.add_argument("--evaluate", action="store_true", help="recompute the card's losses, train nothing")
    parser.add_argument("--lengths", type=int, metavar="ROWS",
                        help="compare the two adapters' answer lengths on ROWS held-out questions of each task")
    parser.add_argument("--write", action="store_true", help="with --lengths: record them on the adapters' cards")
    args = parser.parse_args(argv)
    preset = presets.load(args.preset, environ={})
    if args.lengths:
        answer_lengths(preset, args.lengths, max_new_tokens=96, write=args.write)
    elif not args.task:
        parser.error("--task is required to train or evaluate")
    elif args.evaluate:
        evaluate(preset, args.task)
    else:
        task = TASKS[args.task]
        train(preset, args.task, args.epochs or task["epochs"], args.learning_rate or task["learning_rate"])


if __name__ == "__main__":
    main()
