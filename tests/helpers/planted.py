"""Planted models (issue 18): tiny Llamas whose weights are set by hand so that what a claim of the paper looks
for is there, or is not, by construction. No training: every planted part is a formula of the weights.

- `relative_head`: a head of layer 0 that attends to the token `offset` positions back (RoPE makes the score of
  constant query and key biases a function of p - j alone; the weights are zeroed, so the pattern is the same for
  every text); `content_head` adds a query that a marked set of tokens reads, so that those tokens attend elsewhere.
- `scale_head`, `scale_ffn`, `scale_attention`: the size of a head's or a block's output (its importance follows).
- Token embeddings all have the same norm, so layer 0's RMSNorm is one scale for every token.
"""

from __future__ import annotations

import math
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HEAD_DIM = 16
ROPE_THETA = 100.0  # frequencies 1, 0.56, 0.32, ... rad per position: a sharp peak at one offset
SHARPNESS = 40.0  # the softmax gap between the planted offset and its neighbours, in logits


def planted_llama(vocab_size: int, n_layers: int = 4, n_heads: int = 4, seed: int = 0) -> LlamaForCausalLM:
    """A tiny random Llama (no grouped keys: one key head per head, biases on) with embeddings of equal norm."""
    torch.manual_seed(seed)
    d = n_heads * HEAD_DIM
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=n_layers,
                      num_attention_heads=n_heads, num_key_value_heads=n_heads, max_position_embeddings=256,
                      attention_bias=True, mlp_bias=True, tie_word_embeddings=False, rope_theta=ROPE_THETA,
                      head_dim=HEAD_DIM)
    model = LlamaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            elif param.ndim == 1:
                param.copy_(0.05 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.15 * torch.randn(param.shape, generator=gen))
        emb = model.model.embed_tokens.weight
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))  # rms 1: layer 0's norm is the identity
    return model.eval()


def _rope_pairs(model) -> torch.Tensor:
    """The RoPE frequency of each of the head's HEAD_DIM / 2 rotated pairs (dims i and i + HEAD_DIM / 2)."""
    half = HEAD_DIM // 2
    theta = model.config.rope_parameters["rope_theta"] if hasattr(model.config, "rope_parameters") else \
        model.config.rope_theta
    return 1.0 / (theta ** (torch.arange(half, dtype=torch.float64) * 2 / HEAD_DIM))


def offset_query(model, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, key) [HEAD_DIM] constant vectors whose rotated score peaks where p - j = offset: with RoPE the score
    of pair i is |q||k| cos((p - j) w_i + phase), and phase = -offset w_i puts every pair's peak at the offset."""
    w = _rope_pairs(model)
    half = HEAD_DIM // 2
    size = math.sqrt(SHARPNESS * math.sqrt(HEAD_DIM) / float((1 - torch.cos(w)).sum()))  # |q| = |k| per pair
    key = torch.zeros(HEAD_DIM, dtype=torch.float64)
    key[:half] = size
    query = torch.cat([size * torch.cos(-offset * w), size * torch.sin(-offset * w)])
    return query.float(), key.float()


def relative_head(model, layer: int, head: int, offset: int) -> None:
    """Head `head` of `layer` attends (almost) only to position p - offset (to 0 where p < offset): its query and
    key read nothing, their biases are the constant vectors of `offset_query`."""
    attn = model.model.layers[layer].self_attn
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    query, key = offset_query(model, offset)
    with torch.no_grad():
        attn.q_proj.weight[rows] = 0.0
        attn.k_proj.weight[rows] = 0.0
        attn.q_proj.bias[rows] = query
        attn.k_proj.bias[rows] = key


def scale_head(model, layer: int, head: int, factor: float) -> None:
    """Multiply what head `head` of `layer` writes (its columns of W_O) by `factor`."""
    o = model.model.layers[layer].self_attn.o_proj
    with torch.no_grad():
        o.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] *= factor


def scale_attention(model, layer: int, factor: float) -> None:
    """Multiply the attention block's output of `layer` (W_O and its bias) by `factor`."""
    o = model.model.layers[layer].self_attn.o_proj
    with torch.no_grad():
        o.weight.mul_(factor)
        o.bias.mul_(factor)


def scale_ffn(model, layer: int, factor: float) -> None:
    """Multiply the FFN block's output of `layer` (its down projection and bias) by `factor`."""
    down = model.model.layers[layer].mlp.down_proj
    with torch.no_grad():
        down.weight.mul_(factor)
        down.bias.mul_(factor)


def value_blind(model, layer: int, head: int, dims: list[int]) -> None:
    """Head `head` of `layer` reads none of the embedding dimensions `dims` into its values (W_V's columns there
    are zero): a token whose embedding lives only in `dims` gives that head the value of the bias alone, which
    belongs to the node, to no edge."""
    v = model.model.layers[layer].self_attn.v_proj
    with torch.no_grad():
        v.weight[head * HEAD_DIM:(head + 1) * HEAD_DIM][:, dims] = 0.0


def corpus_claims(model, tokenizer, texts: list[str] | dict[str, list[str]], analyses: tuple[str, ...],
                  n_boot: int = 300, spacy: bool = False) -> dict:
    """Model -> traces -> corpus rows (and weight rows for svd) -> each analysis's summary -> claims, as
    `flowroutes reproduce` runs them (regex words and no POS unless `spacy`); `texts`: the general domain's, or
    domain -> texts.
    Returns claim key -> Claim."""
    import flowroutes
    from flowroutes.analyses.base import Context, registry
    from flowroutes.analyses.rows import corpus_rows
    from flowroutes.analyses.run import compute_rows, corpus_items, make_options

    loaded = flowroutes.load_model(model, tokenizer=tokenizer)
    opts = make_options(None, spacy=spacy, n_boot=n_boot, progress=False, tsne_max=300)
    sources = list(texts.items()) if isinstance(texts, dict) else [("general", texts)]
    items, counts = corpus_items(loaded, sources, opts)
    table = corpus_rows(loaded, items, use_spacy=spacy)
    specs = registry()
    results = {}
    for name in analyses:
        rows = compute_rows("weights", loaded, None, opts, None)[0] if specs[name].kind == "weights" else table
        ctx = Context(rows, loaded.n_layers, loaded.n_heads, opts, counts, loaded, dict(results))
        results[name] = specs[name].summarize(ctx)
    return {c.key: c for name in analyses for c in (specs[name].claims(results) if specs[name].claims else [])}


def word_texts(n: int, seed: int = 0, words: int = 90) -> list[str]:
    """n texts of 12-19 random words 'w0'..'w{words-1}' (the word tokenizer's: one token each)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        ids = torch.randint(0, words, (12 + k % 8,), generator=gen)
        out.append(" ".join(f"w{int(i)}" for i in ids))
    return out


LETTERS = "abcdefghij"
END = "z"  # every word ends in it
G = "\u0120"  # byte-level BPE's mark of a leading space


def subword_tokenizer():
    """Byte-level BPE whose tokens are single letters and a space joined to a letter: ' abc' -> ' a', 'b', 'c'; the
    first subword of every word but the text's first carries its space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = []
    for c in LETTERS:
        merges.append((G, c))
        vocab[G + c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def subword_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 10-15 words of 1-2 letters and the word end 'z': ' abz' -> ' a', 'b', 'z'. 60% of the positions after
    the first are later subwords, under the 70% that would make a head reading the previous token a previous-token
    head."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        words = []
        for _ in range(10 + k % 6):
            size = 1 + int(torch.randint(0, 2, (1,), generator=gen))
            words.append("".join(LETTERS[int(i)] for i in torch.randint(0, len(LETTERS), (size,), generator=gen)))
        out.append(" ".join(w + END for w in words))
    return out


def word_ends_apart(model, tokenizer) -> list[int]:
    """The word end's embedding lives in dims >= HALF, every other token's in dims < HALF (all of rms 1); returns
    the dims of the word end, which `value_blind` can hide from a head."""
    emb = model.model.embed_tokens.weight
    d = emb.shape[1]
    end = tokenizer.convert_tokens_to_ids(END)
    with torch.no_grad():
        emb[:, d // 2:] = 0.0
        v = torch.randn(d, generator=torch.Generator().manual_seed(2))
        v[:d // 2] = 0.0
        emb[end] = v
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))
    return list(range(d // 2, d))


def merging_head(model, tokenizer, layer: int, head: int) -> None:
    """A subword-merging head (sec. 4.3) by construction: it reads the previous token, and a word end gives it
    nothing. Later subwords (letters after the first, and the word end) put all their influence on their own word's
    previous subword; a first subword reads the word end before it, so its influence is zero; 60% of the cases
    read the previous token, so it is not a previous-token head."""
    relative_head(model, layer, head, offset=1)
    value_blind(model, layer, head, word_ends_apart(model, tokenizer))  # its sub-edges from a word end are zero


LATER_PERIOD = "P"  # a second period token: it decodes to "." (rows read it as a period), with an id of its own


def period_tokenizer():
    """Words 'w0'..'w94', '.', 'P' and '[UNK]', split at spaces and punctuation (the word tokenizer with a period);
    'P' decodes to '.': a period whose id is not the first period's, so that a model can tell them apart."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(95)}
    vocab["."] = 95
    vocab["[UNK]"] = 96
    vocab[LATER_PERIOD] = 97
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.Replace(LATER_PERIOD, ".")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def period_texts(n: int, seed: int = 0, later: str = LATER_PERIOD) -> list[str]:
    """n texts of 16-23 random words in up to four sentences: a first period '.' after the 5th-9th word, then two later
    periods `later` ('P', which decodes to '.'; or '.' itself), 4-6 and 8-11 words on."""
    texts = word_texts(n, seed)
    out = []
    for k, text in enumerate(texts):
        words = text.split() + [f"w{(7 * k) % 90}", f"w{(11 * k) % 90}", f"w{(13 * k) % 90}", f"w{(3 * k) % 90}"]
        cut = 5 + k % 5
        second = cut + 4 + k % 3
        third = second + 4 + k % 4
        out.append(" ".join(words[:cut]) + " . " + " ".join(words[cut:second]) + f" {later} "
                   + " ".join(words[second:third]) + f" {later} " + " ".join(words[third:]))
    return out


SINK_PAIR = HEAD_DIM // 2 - 1  # the slowest RoPE pair (0.018 rad per position): content attention nearly unrotated


def sink_token(model, token: int, heads: list[tuple[int, int]], norm: float = 20.0, strength: float = 60.0) -> None:
    """Make `token` a BOS-like sink: its embedding is `norm` times the others' and holds a marker dimension no
    other token has; each (layer, head) of `heads` attends to it from every later position (query bias and key
    column on the slowest RoPE pair, so the score of the marked key is about `strength` logits over any other)."""
    emb = model.model.embed_tokens.weight
    d = emb.shape[1]
    marker = d - 1
    with torch.no_grad():
        emb[:, marker] = 0.0
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))
        emb[token] = 0.0
        emb[token, marker] = norm * math.sqrt(d)
        emb[token, :marker] = norm * torch.randn(marker, generator=torch.Generator().manual_seed(3)) * 0.3
        size = math.sqrt(strength * math.sqrt(HEAD_DIM))
        for layer, head in heads:
            attn = model.model.layers[layer].self_attn
            rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
            for proj in (attn.q_proj, attn.k_proj):
                proj.weight[rows] = 0.0
                proj.bias[rows] = 0.0
            attn.q_proj.bias[head * HEAD_DIM + SINK_PAIR] = size
            # the marked token's normed state holds about marker / rms of it in the marker dimension
            attn.k_proj.weight[head * HEAD_DIM + SINK_PAIR, marker] = size


def like_the_sink(model, sink: int, token: int) -> None:
    """Give `token` the sink token's embedding direction (its marker dimension included) at the other tokens'
    norm: heads that attend to the sink's key at layer 0 attend to it as well (the latest of them, RoPE's slowest
    pair favouring the nearer key), while its own stream stays an ordinary one (not quiet: its blocks count)."""
    emb = model.model.embed_tokens.weight
    with torch.no_grad():
        emb[token] = emb[sink] * (math.sqrt(emb.shape[1]) / emb[sink].norm())


# --- a world of domains: each domain's words live in their own block of embedding dimensions -------------------
DOMAINS = ("general", "english", "code", "russian", "addition", "subtraction")
WORDS_PER_DOMAIN = 20
BLOCK = 20  # embedding dims per domain: domain k's words live in dims k * BLOCK .. (k + 1) * BLOCK - 1
SPARE = len(DOMAINS) * BLOCK  # dims from here on: output directions of promoting heads


#: the words of each domain, in id order: code's are programming words, russian's Cyrillic (what the SVD claim's
#: fixed lexicons call code and non-English), the others 'w{id}'
CODE_WORDS = ["def", "elif", "lambda", "yield", "nonlocal", "assert", "async", "await", "self", "kwargs", "args",
              "isinstance", "getattr", "setattr", "printf", "const", "void", "struct", "enum", "typedef"]
RUSSIAN_WORDS = ["дом", "кот", "мир", "лес", "вода", "день", "ночь", "город", "друг", "книга", "окно", "стол",
                 "река", "поле", "небо", "море", "снег", "хлеб", "рука", "слово"]
DOMAIN_WORDS = [f"w{i}" for i in range(2 * WORDS_PER_DOMAIN)] + CODE_WORDS + RUSSIAN_WORDS + [
    f"w{i}" for i in range(4 * WORDS_PER_DOMAIN, 6 * WORDS_PER_DOMAIN)]


def domain_tokenizer():
    """DOMAIN_WORDS (domain k: ids 20k..20k+19) and '[UNK]'."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(DOMAIN_WORDS)}
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def domain_texts(n: int, seed: int = 0) -> dict[str, list[str]]:
    """n texts of 12-19 words per domain, each drawn from its own domain's words."""
    out = {}
    for k, name in enumerate(DOMAINS):
        base = word_texts(n, seed + k, words=WORDS_PER_DOMAIN)
        out[name] = [" ".join(DOMAIN_WORDS[int(w[1:]) + k * WORDS_PER_DOMAIN] for w in t.split()) for t in base]
    return out


def domain_model(n_layers: int = 3, n_heads: int = 8, seed: int = 0) -> LlamaForCausalLM:
    """A planted Llama (d = 128) whose token embeddings live in their domain's block of dims."""
    model = planted_llama(len(DOMAINS) * WORDS_PER_DOMAIN + 1, n_layers=n_layers, n_heads=n_heads, seed=seed)
    emb = model.model.embed_tokens.weight
    d = emb.shape[1]
    with torch.no_grad():
        keep = torch.zeros_like(emb)
        for k in range(len(DOMAINS)):
            rows = slice(k * WORDS_PER_DOMAIN, (k + 1) * WORDS_PER_DOMAIN)
            keep[rows, k * BLOCK:(k + 1) * BLOCK] = 1.0
        keep[-1, :BLOCK] = 1.0  # [UNK]: with the general words
        emb.mul_(keep)
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))
        for layer in model.model.layers:  # no constant written into every dim: blocks read only what tokens hold
            layer.self_attn.o_proj.bias.zero_()
    scale_ffn(model, 0, 0.0)  # layer 0 only routes words (its heads); its FFN writes nothing
    return model


def block_dims(*domains: str) -> list[int]:
    return [i for name in domains for i in range(DOMAINS.index(name) * BLOCK, (DOMAINS.index(name) + 1) * BLOCK)]


def domain_head(model, layer: int, head: int, domains: tuple[str, ...], scale: float = 2.0) -> None:
    """Head `head` of `layer` reads the previous token, and only the dims of `domains` into its values: it matters
    where the previous word is of those domains, nowhere else."""
    relative_head(model, layer, head, offset=1)
    d = model.config.hidden_size
    value_blind(model, layer, head, [i for i in range(d) if i not in set(block_dims(*domains))])
    scale_head(model, layer, head, scale)


def quiet_heads(model, except_heads: set[tuple[int, int]], factor: float = 1e-4) -> None:
    """Every other head writes `factor` times its output: eq. 1 gives it (almost) no importance anywhere, while its
    W_OV keeps its random directions (its singular vectors are a fair baseline)."""
    for layer in range(model.config.num_hidden_layers):
        for head in range(model.config.num_attention_heads):
            if (layer, head) not in except_heads:
                scale_head(model, layer, head, factor)


def ffn_reads_only(model, layer: int, domains: tuple[str, ...]) -> None:
    """The FFN of `layer` reads only the dims of `domains` and has no biases: tokens of other domains give it
    (almost) nothing to work on."""
    mlp = model.model.layers[layer].mlp
    d = model.config.hidden_size
    blind = [i for i in range(d) if i not in set(block_dims(*domains))]
    with torch.no_grad():
        for proj in (mlp.gate_proj, mlp.up_proj):
            proj.weight[:, blind] = 0.0
            proj.bias.zero_()
        mlp.down_proj.bias.zero_()


def promote(model, layer: int, head: int, domain: str) -> None:
    """Head `head` of `layer` writes only along one spare direction, which the unembedding reads for the words
    of `domain`: its W_OV's top singular vector promotes exactly those words (through a final norm of weight 1)."""
    k = DOMAINS.index(domain)
    direction = SPARE + k
    o = model.model.layers[layer].self_attn.o_proj
    head_u = model.lm_head.weight
    with torch.no_grad():
        cols = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
        size = o.weight[:, cols].norm()
        o.weight[:, cols] = 0.0
        o.weight[direction, cols] = size / math.sqrt(HEAD_DIM)
        head_u[:, direction] = 0.0
        head_u[k * WORDS_PER_DOMAIN:(k + 1) * WORDS_PER_DOMAIN, direction] = 3.0


def same_embeddings(model) -> None:
    """Every token gets the same embedding: no component can tell tokens apart, so every contribution pattern is a
    function of the position alone."""
    emb = model.model.embed_tokens.weight
    with torch.no_grad():
        emb[:] = emb[0].clone()


# --- English words whose part of speech spaCy tags by the word alone ------------------------------------------
POS_WORDS = {"DET": ["the", "a", "this", "every"], "ADP": ["in", "on", "under", "near"],
             "NOUN": ["cat", "dog", "house", "tree", "car", "girl"], "VERB": ["ate", "went", "took", "found"],
             "ADJ": ["big", "small", "red", "old"]}


def pos_tokenizer():
    """A word-level tokenizer over POS_WORDS (and '[UNK]')."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [w for ws in POS_WORDS.values() for w in ws]
    vocab = {w: i for i, w in enumerate(words)}
    vocab["[UNK]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def pos_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 14-19 words drawn at random (part of speech at random too): the next word's part of speech is
    independent of the current one's."""
    gen = torch.Generator().manual_seed(seed)
    classes = list(POS_WORDS)
    out = []
    for k in range(n):
        words = []
        for _ in range(14 + k % 6):
            tag = classes[int(torch.randint(0, len(classes), (1,), generator=gen))]
            words.append(POS_WORDS[tag][int(torch.randint(0, len(POS_WORDS[tag]), (1,), generator=gen))])
        out.append(" ".join(words))
    return out


def pos_embeddings(model, tokenizer, tags=tuple(POS_WORDS), spread: float = 0.2) -> None:
    """Words of one part of speech of `tags` share an embedding (plus `spread` of noise): every component sees
    the part of speech of such an input, and little else; the other words keep their random embeddings."""
    emb = model.model.embed_tokens.weight
    d = emb.shape[1]
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for words in (POS_WORDS[t] for t in tags):
            centre = torch.randn(d, generator=gen)
            for w in words:
                emb[tokenizer.convert_tokens_to_ids(w)] = centre + spread * torch.randn(d, generator=gen)
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))


# --- a copy task: the answer is the prompt's first word ----------------------------------------------------------
CANDIDATES = 8  # first words w0..w7; the answer directions are the last CANDIDATES embedding dims
COPY_LENGTH = 6  # prompt words: the last position reads position 0 at offset 5


def copy_examples(n: int, seed: int = 0, contrast_from: int = 0):
    """TaskExamples 'w{a} w.. w.. w.. w.. w..' -> answer 'w{a}', wrong 'w{(a+1) % 8}'; the contrastive prompt has
    another first word: a candidate (contrast_from = 0) or a word of w{contrast_from}..w{contrast_from + 7}. The
    middle words come from w20..w89."""
    from flowroutes.tasks import TaskExample

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        a = int(torch.randint(0, CANDIDATES, (1,), generator=gen))
        rest = " ".join(f"w{int(i)}" for i in torch.randint(20, 90, (COPY_LENGTH - 1,), generator=gen))
        b = contrast_from + (a + 3) % CANDIDATES
        out.append(TaskExample(prompt=f"w{a} {rest}", answer=f"w{a}", wrong=f"w{(a + 1) % CANDIDATES}",
                               contrastive=f"w{b} {rest}"))
    return out


def task_claims(model, tokenizer, runs: dict[str, list], tau: float = 0.03) -> dict:
    """Model -> task rows (routes of the task and contrastive prompts at tau) -> the task-heads summary of each
    run (task name -> its TaskExamples, e.g. {"ioi": [...]}) -> the claims, as `flowroutes reproduce` runs them;
    claim key -> Claim."""
    from dataclasses import asdict

    import flowroutes
    from flowroutes.analyses.base import Context, registry
    from flowroutes.analyses.rows import task_rows
    from flowroutes.analyses.run import make_options

    loaded = flowroutes.load_model(model, tokenizer=tokenizer)
    spec = registry()["task-heads"]
    results = {}
    for task, examples in runs.items():
        items = [{"index": i, "example": asdict(e)} for i, e in enumerate(examples)]
        table = task_rows(loaded, items, tau=tau)
        opts = make_options(None, task=task, n_boot=300, progress=False)
        ctx = Context(table, loaded.n_layers, loaded.n_heads, opts, {"task": task, "tau": tau}, loaded)
        results[f"task-heads:{task}"] = spec.summarize(ctx)
    return {c.key: c for c in spec.claims(results)}


def reads_only(model, layer: int, head: int, words: range) -> None:
    """A copy head of `copy_model` reads only the candidate words `words` (its other value dims are zeroed)."""
    attn = model.model.layers[layer].self_attn
    with torch.no_grad():
        for a in range(CANDIDATES):
            if a not in words:
                attn.v_proj.weight[head * HEAD_DIM + a] = 0.0


def copy_model(heads: list[tuple[int, int]], write: float, unembed: float, sleep: float = 0.0,
               n_layers: int = 2, n_heads: int = 12) -> LlamaForCausalLM:
    """A planted Llama (d = 192) on the word tokenizer whose `heads` copy the first word to the last position: each
    attends 5 positions back, reads which candidate word is there (W_V) and writes `write` along that word's answer
    direction (W_O), which the unembedding reads with weight `unembed` for that word; nothing else writes along
    the answer directions. Large `write`: the copy heads
    are big parts of the last position's sums (in the routes); small `write` with large `unembed`: they move the
    logits as much while eq. 1 gives them no importance. `sleep`: seconds each forward pass waits (a model of
    known cost)."""
    from tests.helpers.models import VOCAB

    model = planted_llama(VOCAB, n_layers=n_layers, n_heads=n_heads)
    d = model.config.hidden_size
    emb, head_u = model.model.embed_tokens.weight, model.lm_head.weight
    first = d - CANDIDATES
    with torch.no_grad():
        emb[:, first:] = 0.0
        emb.div_(emb.norm(dim=-1, keepdim=True)).mul_(math.sqrt(d))
        head_u[:, first:] = 0.0
        for a in range(CANDIDATES):
            head_u[a, first + a] = unembed
        for block in model.model.layers:  # nothing but the copy heads writes along the answer directions
            block.self_attn.o_proj.weight[first:] = 0.0
            block.self_attn.o_proj.bias[first:] = 0.0
            block.mlp.down_proj.weight[first:] = 0.0
            block.mlp.down_proj.bias[first:] = 0.0
        for layer, head in heads:
            relative_head(model, layer, head, offset=COPY_LENGTH - 1)
            attn = model.model.layers[layer].self_attn
            rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
            attn.v_proj.weight[rows] = 0.0
            attn.v_proj.bias[rows] = 0.0
            for a in range(CANDIDATES):  # value dim a: how much of word a's embedding the token holds
                attn.v_proj.weight[head * HEAD_DIM + a] = emb[a] / emb[a].norm() ** 2 * math.sqrt(d)
            attn.o_proj.weight[:, rows] = 0.0
            for a in range(CANDIDATES):
                attn.o_proj.weight[first + a, head * HEAD_DIM + a] = write
    if sleep:
        model.register_forward_pre_hook(lambda *_: time.sleep(sleep))
    return model


def unlike_candidates(model, words: range) -> None:
    """The embeddings of `words` lose their components along the candidate words' embeddings (kept at rms 1): a
    copy head reads nothing of them."""
    emb = model.model.embed_tokens.weight
    d = emb.shape[1]
    with torch.no_grad():
        basis, _ = torch.linalg.qr(emb[:CANDIDATES].T)  # [d, CANDIDATES]
        for w in words:
            v = emb[w] - basis @ (basis.T @ emb[w])
            emb[w] = v / v.norm() * math.sqrt(d)
