"""The policy chain: ORDER decides, the first answer ends the walk, response hooks run
in reverse over the policies that ran, errors included."""

from __future__ import annotations

from typing import ClassVar

from werkzeug.wrappers import Response

from gateway.context import RequestContext
from gateway.policies.chain import PolicyChain, Terminal
from gateway.problems import Forbidden
from tests.policy_support import context


class Step:
    def __init__(
        self, order: int, log: list[str], *, answer: bool = False, fail: bool = False
    ) -> None:
        self.ORDER = order
        self.log = log
        self.answer = answer
        self.fail = fail

    ORDER: ClassVar[int]

    def on_request(self, ctx: RequestContext) -> Response | None:
        self.log.append(f"request {self.ORDER}")
        if self.fail:
            raise Forbidden("no")
        return Response("early", status=299) if self.answer else None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        self.log.append(f"response {self.ORDER}")
        response.headers.add("X-Steps", str(self.ORDER))
        return response


def forward(log: list[str]) -> Terminal:
    def terminal(ctx: RequestContext) -> Response:
        log.append("forward")
        return Response("upstream", status=200)

    return terminal


def test_policies_run_in_order_around_the_terminal_step_whatever_order_given() -> None:
    log: list[str] = []
    chain = PolicyChain([Step(30, log), Step(10, log), Step(20, log)])
    response = chain.run(context(), forward(log))
    assert log == [
        "request 10",
        "request 20",
        "request 30",
        "forward",
        "response 30",
        "response 20",
        "response 10",
    ]
    assert response.status_code == 200
    assert response.headers.getlist("X-Steps") == ["30", "20", "10"]


def test_an_answer_ends_the_walk_and_only_the_policies_that_ran_see_it() -> None:
    log: list[str] = []
    chain = PolicyChain([Step(10, log), Step(20, log, answer=True), Step(30, log)])
    response = chain.run(context(), forward(log))
    assert log == ["request 10", "request 20", "response 20", "response 10"]
    assert response.status_code == 299


def test_an_error_is_a_problem_that_the_policies_that_ran_still_decorate() -> None:
    log: list[str] = []
    chain = PolicyChain([Step(10, log), Step(20, log, fail=True), Step(30, log)])
    response = chain.run(context("/x/1"), forward(log))
    assert "forward" not in log and "request 30" not in log
    assert log[-2:] == ["response 20", "response 10"]
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["instance"] == "/x/1" and body["request_id"] == "req-1"
    assert response.headers.getlist("X-Steps") == ["20", "10"]
