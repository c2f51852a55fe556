"""The zoo's tokenizer: one token per printable ASCII character, nothing downloaded.

Four merges make " A" … " D" single tokens, so a multiple-choice answer letter after
"The answer is" is one token whichever way a scorer tokenizes it. Every encoding starts with
<bos>, the same way the zoo's training documents start.

>>> tok = build_tokenizer()
>>> tok.convert_ids_to_tokens(tok("is B").input_ids)
['<bos>', 'i', 's', ' B']
>>> tok.decode(tok("abc").input_ids, skip_special_tokens=True)
'abc'
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # 96: space, newline, 94 visible
LETTER_TOKENS = [" A", " B", " C", " D"]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer (104 symbols), left padding, <bos> prepended."""
    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS + LETTER_TOKENS)}
    merges = [(" ", t[1]) for t in LETTER_TOKENS]
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    # An explicit pre-tokenizer: without one, transformers' loader installs a default that drops spaces.
    core.pre_tokenizer = pre_tokenizers.Split("\n", behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without spaces
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )
