"""Prompt formats: how a question becomes the token ids a model family was trained on.

Three formats, picked per preset:
- ``chat_template``: the tokenizer's own chat template (ChatML for SmolLM2).
- ``turkish_gpt2_instruct``: the turkish-gpt2 instruct card's ``### Kullanıcı:`` format. Its answers
  end at ``<|stop|>``, which is an ordinary token in that vocabulary, not a special one, so generation
  stops on its id and the text is cut at the string.
- ``plain_qa``: ``Soru: …\\nCevap:`` for fine-tunes of a base (non-instruct) model.
"""

from __future__ import annotations

from dataclasses import dataclass

from errors import Refusal

FORMATS = ("chat_template", "turkish_gpt2_instruct", "plain_qa")
# ``auto``, for sources given on the command line: the chat template when the tokenizer has one, otherwise the
# plain Soru/Cevap format; resolved once the tokenizer is loaded (``resolve``).
CHOICES = (*FORMATS, "auto")


def resolve(format_name: str, tokenizer) -> str:
    """The format a model set will use with this tokenizer; raises PromptError, at load, for one that cannot work."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if format_name == "auto":
        return "chat_template" if has_template else "plain_qa"
    if format_name == "chat_template" and not has_template:
        raise PromptError("err_no_chat_template")
    if format_name not in FORMATS:
        raise PromptError("err_unknown_format", name=format_name, choices=", ".join(CHOICES))
    return format_name

TURKISH_GPT2_STOP = "<|stop|>"


class PromptError(Refusal):
    """A question that cannot become a prompt (empty, or a format the tokenizer cannot serve)."""


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    dropped_tokens: int  # cut from the left to fit the context; the caller tells the user
    stop_strings: tuple[str, ...]
    eos_token_ids: tuple[int, ...]


def render(format_name: str, question: str, tokenizer, system: str | None = None) -> str:
    """The prompt text for one question, ending where the model's answer begins."""
    if not isinstance(question, str) or not question.strip():
        raise PromptError("err_question_empty")
    question = question.strip()
    if format_name == "chat_template":
        if not getattr(tokenizer, "chat_template", None):
            raise PromptError("err_no_chat_template")
        messages = [{"role": "user", "content": question}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if format_name == "turkish_gpt2_instruct":
        return f"### Kullanıcı:\n{question}\n### Asistan:\n"
    if format_name == "plain_qa":
        return f"Soru: {question}\nCevap:"
    raise PromptError("err_unknown_format", name=format_name, choices=", ".join(CHOICES))


def stop_strings(format_name: str) -> tuple[str, ...]:
    if format_name == "turkish_gpt2_instruct":
        return (TURKISH_GPT2_STOP,)
    if format_name == "plain_qa":
        # A base model keeps writing the next "Soru:" after its answer.
        return ("\nSoru:",)
    return ()


def eos_ids(format_name: str, tokenizer) -> tuple[int, ...]:
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if format_name == "turkish_gpt2_instruct":
        stop_id = tokenizer.convert_tokens_to_ids(TURKISH_GPT2_STOP)
        if stop_id is not None and stop_id != tokenizer.unk_token_id:
            ids.append(int(stop_id))
    return tuple(dict.fromkeys(ids))


def build(format_name: str, question: str, tokenizer, max_context: int, max_new_tokens: int,
          system: str | None = None) -> Prompt:
    """Token ids for a question, cut from the left when prompt + answer would not fit the context."""
    text = render(format_name, question, tokenizer, system)
    # Chat templates already carry the special tokens they need; plain formats get the tokenizer's BOS if any.
    ids = tokenizer(text, add_special_tokens=format_name != "chat_template")["input_ids"]
    budget = max_context - max_new_tokens
    if budget < 1:
        raise PromptError("err_no_room", n=max_new_tokens, context=max_context)
    dropped = max(0, len(ids) - budget)
    return Prompt(
        ids=list(ids[dropped:]),
        dropped_tokens=dropped,
        stop_strings=stop_strings(format_name),
        eos_token_ids=eos_ids(format_name, tokenizer),
    )


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """The answer up to the first stop string."""
    cut = len(text)
    for stop in stops:
        at = text.find(stop)
        if at != -1:
            cut = min(cut, at)
    return text[:cut]
