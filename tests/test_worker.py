"""The model worker: the one owner of a model. Continuous batching on PyTorch against
one-at-a-time answers at several arrival patterns, rows leaving when cancelled, seeded sampling
independent of the rows beside it, batched calls merged by key, errors kept to their prompt."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ift_engine.models.base import GenerationSettings
from ift_engine.models.hf_causal import CausalLMOptions, HFCausalLM
from ift_engine.models.mock import MockModel
from ift_engine.models.worker import Completion, Failure, ModelWorker, WorkerStats

QUESTIONS = [
    "How do bees talk?",
    "Why is the sky blue?",
    "Name three fruits.",
    "Say hello.",
    "What is 2+2?",
    "Tell a story.",
]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny(tiny_causal_dir: Path) -> HFCausalLM:
    return HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu", batch_size=4))


class Sizes(WorkerStats):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []
        self.on_batch = self.seen.append


def texts(outcomes: list[Any]) -> list[str]:
    assert all(isinstance(o, Completion) for o in outcomes), outcomes
    return [o.text for o in outcomes]


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_rows_that_join_a_running_batch_get_their_one_at_a_time_answers(
    tiny: HFCausalLM, penalty: float
) -> None:
    settings = GenerationSettings(max_new_tokens=24, repetition_penalty=penalty)
    alone = [tiny.generate([chat(q)], settings)[0] for q in QUESTIONS]
    stats = Sizes()
    worker = ModelWorker(tiny, stats)
    try:
        first = worker.generate([chat(q) for q in QUESTIONS[:2]], settings)
        time.sleep(0.05)  # the first rows are decoding when the others arrive, one by one
        later = []
        for q in QUESTIONS[2:]:
            later.append(worker.generate([chat(q)], settings))
            time.sleep(0.01)
        answers = texts(first.result(60)) + [texts(f.result(60))[0] for f in later]
    finally:
        worker.close()
    assert answers == alone
    assert max(stats.seen) <= 4  # the model's batch_size bounds the running rows


def test_short_answers_leave_the_batch_and_waiting_rows_take_their_place(tiny: HFCausalLM) -> None:
    short, long = GenerationSettings(max_new_tokens=2), GenerationSettings(max_new_tokens=30)
    stats = Sizes()
    worker = ModelWorker(tiny, stats)
    try:
        futures = [worker.generate([chat(q)], short if i % 2 else long) for i, q in enumerate(QUESTIONS)]
        outcomes = [f.result(60)[0] for f in futures]
    finally:
        worker.close()
    assert [o.finish for o in outcomes[1::2]] == ["length"] * 3 and all(
        o.completion_tokens == 2 for o in outcomes[1::2]
    )
    assert outcomes[0].prompt_tokens and outcomes[0].completion_tokens
    assert 3 in stats.seen or 2 in stats.seen  # rows left before the long ones ended


def test_a_cancelled_request_leaves_at_the_next_step(tiny: HFCausalLM) -> None:
    settings = GenerationSettings(max_new_tokens=200, repetition_penalty=1.3)
    stats = Sizes()
    worker = ModelWorker(tiny, stats)
    try:
        kept = worker.generate([chat(QUESTIONS[0])], settings)
        gone = worker.generate([chat(QUESTIONS[1])], settings)
        time.sleep(0.1)
        assert gone.cancel()
        answer = texts(kept.result(60))[0]
    finally:
        worker.close()
    assert answer == tiny.generate([chat(QUESTIONS[0])], settings)[0]
    assert stats.seen[-1] == 1 and 2 in stats.seen  # the cancelled row left; the other went on alone


def test_seeded_sampling_does_not_depend_on_the_rows_beside_it(tiny: HFCausalLM) -> None:
    sampled = GenerationSettings(max_new_tokens=16, temperature=1.0, seed=7)
    worker = ModelWorker(tiny)
    try:
        alone = texts(worker.generate([chat("Tell a story.")], sampled).result(60))
        crowded = worker.generate([chat(q) for q in QUESTIONS], sampled.model_copy(update={"seed": 1}))
        beside = worker.generate([chat("Tell a story.")], sampled)
        assert texts(beside.result(60)) == alone
        crowded.result(60)
    finally:
        worker.close()


def test_batched_calls_merge_by_key_and_errors_stay_with_their_prompt() -> None:
    model = MockModel("m", default="ok", delay=0.05, errors={"poison": "bad prompt"})
    worker = ModelWorker(model)
    blocker = threading.Event()
    try:
        worker.run(blocker.wait)  # holds the worker while the jobs queue up
        labels = ("yes", "no")
        futures = [
            worker.submit(("classify", *labels), lambda m, p, _: m.classify(p, labels), [chat(t)])
            for t in ["a", "poison", "b"]
        ]
        other = worker.generate([chat("c")], GenerationSettings())
        cancelled = worker.submit(("classify", *labels), lambda m, p, _: m.classify(p, labels), [chat("d")])
        assert cancelled.cancel()
        blocker.set()
        outcomes = [f.result(10)[0] for f in futures]
        assert texts(other.result(10)) == ["ok"]
    finally:
        worker.close()
    assert isinstance(outcomes[1], Failure) and outcomes[1].message == "bad prompt"
    assert outcomes[0] == outcomes[2] == [0.5, 0.5]
    prompts = [call.prompts for call in model.calls]
    assert prompts[0] == ("a", "poison", "b")  # one merged call; then each prompt alone
    assert ("d",) not in prompts  # the cancelled job never ran


def test_a_closed_worker_refuses_new_work_and_fails_what_was_left() -> None:
    from ift_engine.errors import IftError

    worker = ModelWorker(MockModel("m", default="ok", delay=0.2))
    busy = worker.generate([chat("a")], GenerationSettings())
    time.sleep(0.05)
    worker.close()  # after the work already submitted
    assert texts(busy.result(5)) == ["ok"]
    with pytest.raises(IftError, match="closed"):
        worker.run(lambda: None)
    with pytest.raises(IftError, match="closed"):
        worker.generate([chat("b")], GenerationSettings())


def test_a_call_that_answers_too_few_prompts_fails_them_instead_of_hanging() -> None:
    worker = ModelWorker(MockModel("m"))
    try:
        [outcome, _] = worker.submit("short", lambda m, p, _: [], [chat("a"), chat("b")]).result(5)
    finally:
        worker.close()
    assert isinstance(outcome, Failure) and "returned 0 answers for 1 prompts" in outcome.message


def test_a_large_job_goes_over_several_turns_of_batch_size() -> None:
    model = MockModel("m", default="ok")
    worker = ModelWorker(model)
    try:
        labels = ("yes", "no")
        rows = worker.submit(
            "classify", lambda m, p, _: m.classify(p, labels), [chat(str(i)) for i in range(40)]
        ).result(10)
    finally:
        worker.close()
    assert len(rows) == 40 and [len(call.prompts) for call in model.calls] == [16, 16, 8]


def test_a_row_ends_with_length_where_the_model_has_no_more_positions(tiny: HFCausalLM) -> None:
    limit = tiny.model.config.max_position_embeddings
    endless = HFCausalLM("endless", tiny.model, tiny.tokenizer)
    endless.stop_ids = [10**9]  # no token ends its answers: only the context can
    worker = ModelWorker(endless)
    try:
        [long] = worker.generate(
            [chat("Tell a story.")], GenerationSettings(max_new_tokens=2 * limit)
        ).result(120)
    finally:
        worker.close()
    assert long.finish == "length" and long.prompt_tokens + long.completion_tokens == limit


def test_the_token_budget_bounds_the_running_rows_and_a_row_over_it_runs_alone(tiny_causal_dir: Path) -> None:
    settings = GenerationSettings(max_new_tokens=12)
    probe = HFCausalLM.load("tiny", str(tiny_causal_dir), CausalLMOptions(device="cpu"))
    alone = [probe.generate([chat(q)], settings)[0] for q in QUESTIONS]
    need = max(probe.prompt_length(chat(q)) for q in QUESTIONS) + settings.max_new_tokens
    for budget, most in ((2 * need, 2), (need // 2, 1)):  # two rows fit; not even one row fits
        options = CausalLMOptions(device="cpu", batch_size=8, max_batch_tokens=budget)
        stats = Sizes()
        worker = ModelWorker(HFCausalLM.load("tiny", str(tiny_causal_dir), options), stats)
        try:
            answers = texts(worker.generate([chat(q) for q in QUESTIONS], settings).result(60))
        finally:
            worker.close()
        assert answers == alone
        assert max(stats.seen) == most, (budget, stats.seen)
