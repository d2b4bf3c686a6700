"""A byte-level BPE tokenizer built by hand from written merges, for the task tests; never downloads one."""

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

G = "\u0120"  # byte-level BPE's mark of a leading space


def bpe(words=(), years: bool = True, whole_years=()) -> PreTrainedTokenizerFast:
    """A byte-level BPE made of hand-written merges: every word of `words` is one token after a space (" Mary");
    with `years`, " 11".." 17" and "00".."99" are tokens (" 1732" -> " 17", "32") and each year of `whole_years`
    (e.g. "1700") is one token " 1700"; all other text falls apart into bytes (digits one by one)."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []

    def merge(a: str, b: str) -> str:
        if (a, b) not in merges:
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
        return a + b

    if years:
        for xx in range(11, 18):
            merge(merge(G, "1"), str(xx)[1])
        for yy in range(100):
            merge(*f"{yy:02d}")
        for year in whole_years:
            merge(G + year[:2], year[2:])
    for word in words:
        piece = G
        for ch in word:
            piece = merge(piece, ch)
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


SP = "\u2581"  # SentencePiece's mark of a space


def byte_fallback(words=()) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE with byte fallback (as Gemma's and Llama 2's): ASCII letters, digits and
    punctuation are pieces, each word of `words` is one piece after a space ("\u2581Mary"), and every other character
    falls apart into its UTF-8 bytes as pieces '<0xE2>' that the decoder joins back."""
    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    for c in [SP] + [chr(c) for c in range(0x21, 0x7F)]:
        vocab.setdefault(c, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        piece = SP
        for ch in word:
            merges.append((piece, ch))
            piece += ch
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", SP)
    tok.decoder = decoders.Sequence([decoders.Replace(SP, " "), decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok)
