"""The explorer's generate mode (issue 20, item 3) in headless Chromium on a tiny Llama folder: the answer, its
probabilities, each token's routes and the prompt's colours are those `flowroutes.generate` gives in Python for the
same model (exactly: the same float64 numbers, the same routes), greedy, sampled with a seed, with stop strings,
in a chat template and for a given (teacher-forced) answer; and /api/generate's bounds on those options."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

import flowroutes
from flowroutes.web.store import Settings
from tests.helpers.models import TINY_MODELS, word_tokenizer
from tests.helpers.web_helpers import ServerThread

PROMPT = "w1 w2 w3 w1 w5 w6 w7 w2"
N = 5
# a chat template in the word tokenizer's own words: "w90 {user message} w91 w92" (w92 opens the assistant's turn)
CHAT_TEMPLATE = ("{% for m in messages %}w90 {{ m['content'] }} w91 {% endfor %}"
                 "{% if add_generation_prompt %}w92{% endif %}")


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory):
    """The tiny Llama of `tiny_folder` (the same weights) with a tokenizer that has a chat template."""
    folder = tmp_path_factory.mktemp("tiny-llama-chat")
    TINY_MODELS["llama"]().save_pretrained(folder)
    tok = word_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(tiny_folder):
    return flowroutes.load_model(str(tiny_folder))


@pytest.fixture(scope="module")
def server(tiny_folder, chat_folder):
    with ServerThread(Settings(models={"tiny": str(tiny_folder), "chat": str(chat_folder)}, max_prompt_tokens=64,
                               max_new_tokens=8)) as srv:
        yield srv


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught JavaScript error


def generated(page) -> int:
    return int(page.evaluate("Number(document.body.dataset.generateRenders || 0)"))


def wait_generated(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.generateRenders) > {before} && "
                           "document.body.dataset.busy === '0'", timeout=120_000)


def open_generate(page, server, prompt=PROMPT, n=N, **options):
    page.goto(server.url + "/?view=generate")  # a link without a prompt: nothing traced before the generation
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.click('#tabs button[data-view="generate"]')
    page.fill("#generate-prompt", prompt)
    page.fill("#generate-n", str(n))
    run_generate(page, **options)


def run_generate(page, sample: bool | None = None, temperature=None, seed=None, stop=None, target=None) -> None:
    """Set the view's options that are given (greedy or sampling, its temperature and seed, the stop box, the given
    answer) and press Generate."""
    if sample is not None:
        page.select_option("#generate-decoding", "sample" if sample else "greedy")
    for box, value in (("#generate-temperature", temperature), ("#generate-seed", seed), ("#generate-stop", stop),
                       ("#generate-target", target)):
        if value is not None:
            page.fill(box, str(value))
    before = generated(page)
    page.click("#run-generate")
    wait_generated(page, before)


def shown_answer(page) -> tuple[list[str], list[float]]:
    """The answer's tokens (as written on the page) and their probabilities."""
    return (each(page, "#generate-answer .answer-token .answer-text", "e.textContent"),
            each(page, "#generate-answer .answer-token", "Number(e.dataset.prob)"))


def quoted(tokens) -> list[str]:
    return [f'"{t}"' for t in tokens]


def code_run(page) -> dict:
    """The code button's lines, run as a user would: their variables."""
    page.click("#show-code")
    space: dict = {}
    exec(compile(page.inner_text("#code-text"), "view.py", "exec"), space)  # noqa: S102 - the page's own lines
    page.click("#show-code")
    return space


def click_token(page, k: int, shift: bool = False) -> None:
    before = generated(page)
    page.locator(f'#generate-answer .answer-token[data-index="{k}"]').click(modifiers=["Shift"] if shift else [])
    wait_generated(page, before)


def each(page, selector: str, expression: str) -> list:
    """`expression` (of an element e) for each element matching `selector`, in order."""
    return page.eval_on_selector_all(selector, f"els => els.map(e => {expression})")


def shown_scores(page) -> list[float]:
    return each(page, "#generate-prompt-view .prompt-token", "Number(e.dataset.score)")


def shown_alphas(page) -> list[float]:
    return each(page, "#generate-prompt-view .prompt-token", "Number(e.dataset.alpha)")


def shown_routes(page) -> dict:
    return page.evaluate("""() => ({
        position: Number(document.querySelector('#generate-summary').dataset.position),
        edges: Number(document.querySelector('#generate-graph svg.routes').dataset.edges),
        nodes: [...document.querySelectorAll('#generate-graph svg circle[data-id]')].map(c => c.dataset.id).sort(),
        explained: Number(document.querySelector('#generate-graph text.token-label.explained').dataset.position)})""")


def test_answer_tokens_routes_and_prompt_colours_equal_the_python_generation(page, server, reference):
    g = flowroutes.generate(reference, PROMPT, N)
    passes = server.store.slot("tiny").forward_passes
    open_generate(page, server)
    # the answer, token by token, with its probabilities
    texts = each(page, "#generate-answer .answer-token .answer-text", "e.textContent")
    assert texts == [f'"{t}"' for t in g.answer_tokens]
    probs = each(page, "#generate-answer .answer-token", "Number(e.dataset.prob)")
    assert probs == g.answer_probs.tolist()
    # before any click: the prompt coloured by the whole answer's ALTI attribution, the strongest at full colour
    whole = g.attribution()
    assert shown_scores(page) == whole.tolist()
    assert shown_alphas(page) == [round(float(s / whole.max()), 3) for s in whole]
    assert page.locator("#generate-graph svg").count() == 0
    # a click on answer token 2: the routes of position P + 1, and the prompt coloured by that token's attribution
    k = 2
    click_token(page, k)
    one = g.attribution(span=(k, k + 1))
    routes = g.routes(k, 0.04)
    assert routes.position == g.position(k) == len(g.prompt_ids) + k - 1
    assert shown_scores(page) == one.tolist() == g.matrix()[k].tolist()
    assert shown_routes(page) == {"position": routes.position, "edges": len(routes.edges),
                                  "nodes": sorted(n.id for n in routes.nodes), "explained": routes.position}
    assert page.locator("#generate-answer .answer-token.explained").get_attribute("data-index") == str(k)
    # another token draws its own routes
    click_token(page, 4)
    assert shown_routes(page)["position"] == g.position(4) and shown_scores(page) == g.matrix()[4].tolist()
    # shift-click spans from the last clicked token, in either direction; its routes stay drawn
    click_token(page, 1, shift=True)
    assert shown_scores(page) == g.attribution(span=(1, 5)).tolist()
    spanned = each(page, "#generate-answer .answer-token.in-span", "e.dataset.index")
    assert spanned == ["1", "2", "3", "4"] and shown_routes(page)["position"] == g.position(4)
    assert "answer tokens 1..4" in page.inner_text("#generate-caption")
    # the code button's lines, run as a user would, give the numbers on screen
    page.click("#show-code")
    space: dict = {}
    exec(compile(page.inner_text("#code-text"), "view.py", "exec"), space)  # noqa: S102 - the page's own lines
    assert space["scores"].tolist() == shown_scores(page)
    r = space["routes"]
    assert shown_routes(page) == {"position": r.position, "edges": len(r.edges), "nodes": sorted(n.id for n in r.nodes),
                                  "explained": r.position}
    page.click("#show-code")
    # the other attribution: the flow through the routes, at the page's threshold
    before = generated(page)
    page.select_option("#generate-method", "routes")
    wait_generated(page, before)
    assert shown_scores(page) == g.attribution(span=(1, 5), method="routes", tau=0.04).tolist()
    # a new threshold redraws the routes (and the routes flow) at it
    before = generated(page)
    page.evaluate("""() => { const s = document.querySelector('#threshold'); s.value = '0.1';
                             s.dispatchEvent(new Event('input', {bubbles: true})); }""")
    wait_generated(page, before)
    high = g.routes(4, 0.1)
    assert shown_routes(page)["edges"] == len(high.edges) < len(g.routes(4, 0.04).edges)
    assert shown_scores(page) == g.attribution(span=(1, 5), method="routes", tau=0.1).tolist()
    # the generation itself was made once, however many clicks
    assert server.store.slot("tiny").forward_passes == passes + 1
    assert "kept generation" in page.inner_text("#generate-status")


def test_generate_mode_refusals_are_one_line_and_leave_nothing_stale(page, server):
    open_generate(page, server, n=3)
    assert page.locator("#generate-answer .answer-token").count() == 3
    page.fill("#generate-n", "9")  # over this server's --max-new-tokens (8): said before any request
    page.click("#run-generate")
    assert page.inner_text("#error") == "tokens must be a whole number in 1..8 on this server, got 9"
    page.fill("#generate-n", "2")
    page.fill("#generate-prompt", " ".join(["w3"] * 70))  # over --max-prompt-tokens (64): the server's 413
    before = generated(page)
    page.click("#run-generate")
    wait_generated(page, before)
    assert "this server accepts at most 64" in page.inner_text("#error") and "(HTTP 413)" in page.inner_text("#error")
    assert page.locator("#generate-answer .answer-token").count() == 0
    assert page.locator("#generate-prompt-view .prompt-token").count() == 0


def test_a_sampled_answer_is_pythons_with_the_same_seed_and_its_link_makes_it_again(page, server, reference, browser):
    """Sampling at temperature 1.5 with seed 3: the page's answer, probabilities, colours and routes are
    `flowroutes.generate(..., sample=True, seed=3, temperature=1.5)`'s; the seed is shown, the code button's lines
    make the same answer, and the page's address opens the same generation in another browser."""
    g = flowroutes.generate(reference, PROMPT, N, sample=True, seed=3, temperature=1.5)
    greedy = flowroutes.generate(reference, PROMPT, N)
    assert g.answer_ids.tolist() != greedy.answer_ids.tolist()  # this seed samples another answer than greedy
    assert flowroutes.generate(reference, PROMPT, N, sample=True, seed=4, temperature=1.5).answer_ids.tolist() \
        != g.answer_ids.tolist()  # and another seed another one: the seed is what makes it
    open_generate(page, server, sample=True, temperature=1.5, seed=3)
    assert shown_answer(page) == (quoted(g.answer_tokens), g.answer_probs.tolist())
    assert shown_scores(page) == g.attribution().tolist()
    status = page.locator("#generate-status")
    assert status.get_attribute("data-seed") == "3" and "sampled at temperature 1.5 with seed 3" in status.inner_text()
    click_token(page, 2)
    routes = g.routes(2, 0.04)
    assert shown_scores(page) == g.matrix()[2].tolist()
    assert shown_routes(page) == {"position": routes.position, "edges": len(routes.edges),
                                  "nodes": sorted(n.id for n in routes.nodes), "explained": routes.position}
    space = code_run(page)
    assert space["g"].answer_ids.tolist() == g.answer_ids.tolist() and space["scores"].tolist() == shown_scores(page)
    assert "sample=True, temperature=1.5, seed=3" in page.evaluate("generateCode()")
    # the address: a link that makes the same sampled generation again, in another browser
    link = page.url
    assert "gen_seed=3" in link and "gen_temperature=1.5" in link and "view=generate" in link
    other = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    try:
        other.goto(link)
        other.wait_for_function("Number(document.body.dataset.generateRenders) > 0 && "
                                "document.body.dataset.busy === '0'", timeout=120_000)
        assert other.inner_text("#error") == ""
        assert shown_answer(other) == (quoted(g.answer_tokens), g.answer_probs.tolist())
        assert shown_scores(other) == g.attribution().tolist()
        assert other.locator("#generate-status").get_attribute("data-seed") == "3"
    finally:
        other.context.close()
    # an empty seed box: the page draws a seed, shows it, and that seed makes the answer in Python
    passes = server.store.slot("tiny").forward_passes
    run_generate(page, sample=True, temperature=0.7, seed="")
    drawn = int(page.input_value("#generate-seed"))
    assert page.locator("#generate-status").get_attribute("data-seed") == str(drawn)
    again = flowroutes.generate(reference, PROMPT, N, sample=True, seed=drawn, temperature=0.7)
    assert shown_answer(page) == (quoted(again.answer_tokens), again.answer_probs.tolist())
    assert server.store.slot("tiny").forward_passes == passes + 1
    # seed 3 at 1.5 again: the kept generation (the options are part of what is kept), greedy its own
    run_generate(page, sample=True, temperature=1.5, seed=3)
    assert "kept generation" in page.inner_text("#generate-status")
    run_generate(page, sample=False)
    assert shown_answer(page) == (quoted(greedy.answer_tokens), greedy.answer_probs.tolist())
    assert "greedy" in page.inner_text("#generate-status") and page.locator("#generate-status[data-seed]").count() == 0


def test_a_given_answer_is_teacher_forced(page, server, reference):
    """A given answer: the page shows its tokens with `flowroutes.generate(..., target=...)`'s probabilities,
    colours and routes, stop reason "target"; the decoding's controls are unused while it is given."""
    answer = "w3 w4 w5 w9"
    g = flowroutes.generate(reference, PROMPT, target=answer)
    assert g.stop_reason == "target" and g.answer_tokens == ["w3", "w4", "w5", "w9"]
    open_generate(page, server, target=answer)
    assert shown_answer(page) == (quoted(g.answer_tokens), g.answer_probs.tolist())
    assert shown_scores(page) == g.attribution().tolist()
    status = page.locator("#generate-status")
    assert status.get_attribute("data-stop-reason") == "target"
    assert "the given answer, teacher-forced" in status.inner_text()
    assert all(page.locator(c).is_disabled() for c in ("#generate-decoding", "#generate-stop", "#generate-n"))
    click_token(page, 3)
    routes = g.routes(3, 0.04)
    assert shown_routes(page)["edges"] == len(routes.edges) and shown_routes(page)["position"] == g.position(3)
    assert shown_scores(page) == g.matrix()[3].tolist()
    space = code_run(page)
    assert space["g"].answer_probs.tolist() == g.answer_probs.tolist() and space["g"].stop_reason == "target"
    assert space["scores"].tolist() == shown_scores(page)
    assert "gen_answer=w3+w4+w5+w9" in page.url


def test_stop_strings_end_the_answer_at_their_token(page, server, reference):
    """Stop strings, separated by | in one box: the answer ends at the first of them, as
    `flowroutes.generate(..., stop=[...])` ends it, with stop reason "stop"."""
    greedy = flowroutes.generate(reference, PROMPT, N)
    stop = greedy.answer_tokens[0]  # the answer's first token: the answer is that one token
    assert "w95" not in greedy.answer_tokens and greedy.n_answer == N and greedy.stop_reason == "length"
    g = flowroutes.generate(reference, PROMPT, N, stop=["w95", stop])
    assert g.answer_ids.tolist() == greedy.answer_ids[:1].tolist() and g.stop_reason == "stop"
    open_generate(page, server, stop=f"w95|{stop}")
    assert shown_answer(page) == (quoted(g.answer_tokens), g.answer_probs.tolist())
    assert shown_scores(page) == g.attribution().tolist()
    assert page.locator("#generate-status").get_attribute("data-stop-reason") == "stop"
    space = code_run(page)
    assert space["g"].answer_ids.tolist() == g.answer_ids.tolist() and space["g"].stop_reason == "stop"
    assert "gen_stop=" in page.url
    # a stop string of two tokens: the server's one line, and nothing of the last generation stays (nor in the address)
    run_generate(page, stop="w1 w2")
    assert page.inner_text("#error") == "stop token 'w1 w2' is 2 tokens for this tokenizer: give strings of one " \
                                        "token (or token ids) (HTTP 422)"
    assert page.locator("#generate-answer .answer-token").count() == 0 and "gen_" not in page.url
    assert page.locator("#generate-status[data-stop-reason]").count() == 0


def test_the_chat_template_box_follows_the_models_tokenizer(page, server, chat_folder):
    """The tiny word tokenizer has no chat template: the box is disabled with the reason. The same model with one
    ("chat"): the prompt is read in the template, as `flowroutes.generate(..., chat=True)` reads it."""
    chat_model = flowroutes.load_model(str(chat_folder))
    g = flowroutes.generate(chat_model, PROMPT, N, chat=True)
    assert g.prompt == f"w90 {PROMPT} w91 w92" and g.prompt_tokens == ["w90", *PROMPT.split(), "w91", "w92"]
    plain = flowroutes.generate(chat_model, PROMPT, N)
    assert plain.answer_ids.tolist() != g.answer_ids.tolist()  # the template changes the answer
    page.goto(server.url + "/?view=generate")
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.click('#tabs button[data-view="generate"]')
    page.wait_for_function("document.querySelector('#generate-chat-reason').textContent.startsWith('(not available')")
    assert page.inner_text("#generate-chat-reason") == "(not available: tiny's tokenizer has no chat template)"
    assert page.locator("#generate-chat").is_disabled()
    page.select_option("#model", "chat")
    page.wait_for_function("!document.querySelector('#generate-chat').disabled")
    assert page.inner_text("#generate-chat-reason") == ""
    page.check("#generate-chat")
    page.fill("#generate-prompt", PROMPT)
    page.fill("#generate-n", str(N))
    run_generate(page)
    assert each(page, "#generate-prompt-view .prompt-token", "e.textContent") == g.prompt_tokens
    assert shown_answer(page) == (quoted(g.answer_tokens), g.answer_probs.tolist())
    assert shown_scores(page) == g.attribution().tolist()
    assert "in the chat template" in page.inner_text("#generate-status")
    space = code_run(page)
    assert space["g"].answer_ids.tolist() == g.answer_ids.tolist() and space["g"].prompt == g.prompt
    # back to the model without a template: the box is unchecked and disabled again
    page.select_option("#model", "tiny")
    page.wait_for_function("document.querySelector('#generate-chat').disabled")
    assert not page.locator("#generate-chat").is_checked()


# --- the options' bounds at the API ---------------------------------------------------------------------------
def raw_post(srv, body: bytes) -> tuple[int, str]:
    """(status, first line of the answer) of a POST of `body` to /api/generate whose headers announce its length;
    only its first 4 KiB are sent (a server that refuses by the announced length does not read the rest)."""
    head = (f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(head + body[:4096])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1].decode()


def test_bad_options_are_one_line_each_and_leave_the_server_answering(tiny_folder):
    """Temperature 0, negative, NaN, infinite; seeds out of range or missing; options that would go unused; a given
    answer over the caps (1 MB, characters, tokens); 1000 stop strings; a chat template the tokenizer lacks: each is
    refused with one line and a 4xx before any generation, and the next request answers."""
    settings = Settings(models={"m": str(tiny_folder)}, max_new_tokens=4, max_prompt_chars=200)
    with ServerThread(settings) as srv:
        slot = srv.store.slot("m")
        plain = {"prompt": PROMPT, "max_new_tokens": 3}
        sample = {**plain, "sample": True, "seed": 1}
        refused = [
            ({**sample, "temperature": 0}, 422, "temperature must be a number in 0.01..10, got 0.0: try 1"),
            ({**sample, "temperature": -1.5}, 422, "temperature must be a number in 0.01..10, got -1.5"),
            ({**sample, "temperature": float("nan")}, 422, "temperature must be a number in 0.01..10, got nan"),
            ({**sample, "temperature": float("inf")}, 422, "temperature must be a number in 0.01..10, got inf"),
            ({**sample, "temperature": 11}, 422, "temperature must be a number in 0.01..10, got 11.0"),
            ({**sample, "seed": 10**30}, 422, f"needs a seed, a whole number in 0..{2**32 - 1}, got {10**30}"),
            ({**sample, "seed": -1}, 422, "needs a seed, a whole number in 0..4294967295, got -1"),
            ({**sample, "seed": None}, 422, "a sampled answer needs a seed, a whole number in 0..4294967295, got none"),
            ({**sample, "seed": 1.5}, 422, "bad request: seed:"),
            ({**plain, "seed": 3}, 422, "temperature and seed apply only when sampling"),
            ({**plain, "target": "w3", "sample": True, "seed": 1}, 422, "a given answer is teacher-forced"),
            ({**plain, "target": "w3", "stop": ["w4"]}, 422, "a given answer is teacher-forced"),
            ({**plain, "target": "w3 " * 100}, 413, "the given answer has 300 characters; this server "
                                                             "accepts at most 200"),
            ({**plain, "target": "w3 " * 5}, 413, "the given answer has 5 tokens; this server explains "
                                                           "at most 4"),
            ({**plain, "target": " "}, 422, "the target must be the answer's text"),
            ({**plain, "stop": ["w1"] * 1000}, 422, "at most 4 stop strings on this server, got 1000"),
            ({**plain, "stop": ["w1" * 40]}, 422, "a stop string must be 1..64 characters (one token), got "
                                                           "80"),
            ({**plain, "stop": [""]}, 422, "a stop string must be 1..64 characters"),
            ({**plain, "stop": ["w1 w2"]}, 422, "stop token 'w1 w2' is 2 tokens"),
            ({**plain, "stop": [7]}, 422, "bad request: stop.0:"),
            ({**plain, "chat": True}, 422, "'s tokenizer has no chat template: generate without chat"),
        ]
        for body, code, detail in refused:
            status, answer = srv.post("/api/generate", body)
            assert (status, "\n" in answer["detail"]) == (code, False) and detail in answer["detail"], (body, answer)
            assert srv.post("/api/generate", {"prompt": PROMPT, "max_new_tokens": 1})[0] == 200  # still answering
        # a 1 MB given answer: refused by the announced length, before the body is read
        status, text = raw_post(srv, json.dumps({"prompt": PROMPT, "target": "w3 " * 350_000}).encode())
        assert status == 413 and "\n" not in text.strip(), text
        assert srv.post("/api/generate", {"prompt": PROMPT, "max_new_tokens": 1})[0] == 200
        assert slot.forward_passes == 1 and slot.waiting == 0  # the one good generation, kept; nothing else made
        options = json.loads(_get(srv, "/api/generate/options?model=m"))
        assert options == {"model": "m", "chat": False, "chat_reason": "m's tokenizer has no chat template",
                           "temperature": [0.01, 10.0], "max_seed": 2**32 - 1, "max_stops": 4, "max_stop_chars": 64,
                           "max_new_tokens": 4}


def _get(srv, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(srv.url + path, timeout=60) as res:
        return res.read().decode()


def test_each_option_is_part_of_the_kept_generation_and_made_once_for_many(tiny_folder, reference):
    """The kept generations are keyed by every option: two seeds are two generations, the same seed again is the
    kept one, greedy and a stop string and a given answer their own; six clients asking for one sampled answer at
    once get one generation, with Python's numbers."""
    with ServerThread(Settings(models={"m": str(tiny_folder)}, max_new_tokens=8, cache_size=10)) as srv:
        slot = srv.store.slot("m")
        sampled = {"prompt": PROMPT, "max_new_tokens": N, "sample": True, "temperature": 1.5, "seed": 3}
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: srv.post("/api/generate", sampled), range(6)))
        assert [status for status, _ in answers] == [200] * 6 and slot.forward_passes == 1
        assert sum(not a["cached"] for _, a in answers) == 1
        g = flowroutes.generate(reference, PROMPT, N, sample=True, seed=3, temperature=1.5)
        assert all([t["id"] for t in a["answer"]] == g.answer_ids.tolist() for _, a in answers)
        assert all([t["prob"] for t in a["answer"]] == g.answer_probs.tolist() for _, a in answers)
        ids = {}
        for name, extra in (("seed 4", {"seed": 4}), ("temperature 0.5", {"temperature": 0.5}),
                            ("greedy", {"sample": False, "temperature": None, "seed": None}),
                            ("stop", {"sample": False, "temperature": None, "seed": None, "stop": ["w95"]}),
                            ("target", {"sample": False, "temperature": None, "seed": None, "target": "w3 w4"})):
            status, a = srv.post("/api/generate", {**sampled, **extra})
            assert status == 200 and not a["cached"], (name, a)
            ids[name] = [t["id"] for t in a["answer"]]
        assert slot.forward_passes == 6
        assert ids["seed 4"] == flowroutes.generate(reference, PROMPT, N, sample=True, seed=4,
                                                    temperature=1.5).answer_ids.tolist() != g.answer_ids.tolist()
        assert ids["target"] == flowroutes.generate(reference, PROMPT, target="w3 w4").answer_ids.tolist()
        status, a = srv.post("/api/generate", {**sampled, "token": 1})
        assert status == 200 and a["cached"] and slot.forward_passes == 6
        assert a["options"] == {"sample": True, "temperature": 1.5, "seed": 3, "stop": [], "chat": False,
                                "target": None}
