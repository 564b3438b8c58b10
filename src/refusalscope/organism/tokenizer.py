"""A byte-level BPE chat tokenizer trained with ``tokenizers``.

Wrapped as ``PreTrainedTokenizerFast`` with special tokens and a Jinja chat template,
so it saves with ``save_pretrained`` and loads with ``AutoTokenizer`` like any real
chat model's tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL = {
    "bos_token": "<|bos|>",
    "eos_token": "<|end|>",
    "pad_token": "<|pad|>",
    "unk_token": "<|unk|>",
}
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}<|end|>"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_chat_tokenizer(texts: Iterable[str], vocab_size: int = 1500):
    """Train a byte-level BPE on ``texts`` and wrap it as a chat tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL["bos_token"], SPECIAL["eos_token"], SPECIAL["pad_token"]]
    specials += [SPECIAL["unk_token"], *ROLE_TOKENS]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        additional_special_tokens=list(ROLE_TOKENS),
        **SPECIAL,
    )
