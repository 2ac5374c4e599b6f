"""Failover figure (issue 15): SIGKILL the worker serving someone in the middle of a streamed reply.

Starts ``app_ng.py --workers 2`` (the real supervisor and HAProxy; a temporary data directory, the owner
cookie key created once by the supervisor, offline model at 20 ms/token) and drives it through HAProxy
with the load generator's protocol (bench/loadgen.py: one cookie jar and one session_hash per person,
as one open page):

1. K people each tell their name and add 2 apples to their cart;
2. all of them start a long streamed reply (``Count to 300``) at once;
3. once person 0 has seen 20 tokens, the worker serving person 0 (``X-Cmw-Worker`` of a request with
   person 0's cookie; its PID among the supervisor's children) gets SIGKILL;
4. person 0 sends the next message ("What's my name?") from the same page (same cookie, same
   session_hash), again every 0.2 s until one is answered, then "What's in my cart?";
5. person 0's conversation is read back (``/conversations`` then ``/resume``): every turn completed
   before or after the kill must be stored with the reply that was shown; the interrupted turn is printed.

Printed: time from SIGKILL to the next answered message, name and cart intact, turns lost, the
interrupted turn as stored, and whether the people on the surviving worker got their streams whole.
Exit status 1 when a completed turn was lost, name or cart is not intact, no answer came within 60 s,
or a stream on the surviving worker broke.

    .venv/bin/python bench/failover.py [--people 20] [--json out.json]
    .venv/bin/python bench/failover.py --quick     # 4 people, Count to 100 (CI, via run_all --quick)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SupervisedApp, bench_env, loadavg  # noqa: E402
from loadgen import Turn, User, discover, new_session_hash  # noqa: E402

TOKEN_DELAY = 0.02
KILL_AFTER_TOKENS = 20
ANSWER_WITHIN = 60.0  # seconds after the kill
CART_TURN = "Add 2 apples to my cart"


class Person:
    def __init__(self, i: int, url: str):
        self.i = i
        self.name = f"Failover{i}"
        self.user = User(url, timeout=120)
        self.session_hash = new_session_hash()
        self.worker: str | None = None
        self.done: list[Turn] = []  # completed turns, in order

    async def worker_now(self) -> str | None:
        return (await self.user.get("/healthz")).headers.get("x-cmw-worker")

    async def say(self, chat, text: str, record: Turn | None = None) -> Turn:
        turn = await self.user.turn(chat, self.session_hash, text, record)
        if turn.ok:
            self.done.append(turn)
        return turn


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(part) for part in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return "" if content is None else str(content)


def lost_turns(records: list[dict], done: list[Turn]) -> list[str]:
    """Completed turns whose user message, or the reply shown for it, is not in the stored records."""
    lost, at = [], 0
    for turn in done:
        for j in range(at, len(records)):
            if records[j].get("role") == "user" and _text(records[j].get("content")).strip() == turn.message:
                answers = []
                for r in records[j + 1:]:
                    if r.get("role") == "user":
                        break
                    answers.append(_text(r.get("content")).strip())
                if turn.text.strip() in answers:
                    at = j + 1
                    break
        else:
            lost.append(turn.message)
    return lost


def interrupted(records: list[dict], message: str) -> list[dict]:
    """The stored records of the interrupted turn: its user message and whatever follows it."""
    for j in range(len(records) - 1, -1, -1):
        if records[j].get("role") == "user" and _text(records[j].get("content")).strip() == message:
            out = [records[j]]
            for r in records[j + 1:]:
                if r.get("role") == "user":
                    break
                out.append(r)
            return out
    return []


async def _people(url: str, k: int) -> list[Person]:
    """K people with their owner cookie; more (up to 4K) if none landed on a second worker."""
    people: list[Person] = []
    while len(people) < k or (len({p.worker for p in people}) < 2 and len(people) < 4 * k):
        person = Person(len(people), url)
        await person.user.open("/")
        person.worker = await person.worker_now()
        people.append(person)
    return people


async def scenario(app: SupervisedApp, k: int, count_to: int, log) -> dict:
    url = app.url
    chat = await discover(url, "chat")
    list_ep = await discover(url, "conversations", text_in_out=False)
    resume_ep = await discover(url, "resume")
    people = await _people(url, k)
    try:
        p0 = people[0]
        victim = p0.worker
        log(f"{len(people)} people: " + ", ".join(f"worker {w}: {sum(p.worker == w for p in people)}"
                                                   for w in sorted({p.worker for p in people})))
        setup = await asyncio.gather(*(p.say(chat, f"My name is {p.name}") for p in people))
        setup += await asyncio.gather(*(p.say(chat, CART_TURN) for p in people))
        setup_errors = [t.error for t in setup if not t.ok]

        long_turn = f"Count to {count_to}"
        expected_count = " ".join(str(n) for n in range(1, count_to + 1))
        streams = [Turn(p.session_hash, long_turn) for p in people]
        tasks = [asyncio.create_task(p.say(chat, long_turn, r)) for p, r in zip(people, streams)]
        waited = time.monotonic()
        while len(streams[0].text.split()) < KILL_AFTER_TOKENS and not tasks[0].done():
            if time.monotonic() - waited > 60:
                raise RuntimeError("person 0's stream did not start within 60 s")
            await asyncio.sleep(0.005)
        process = app.worker_processes()[victim]
        tokens_at_kill = len(streams[0].text.split())
        t_kill = time.perf_counter()
        process.send_signal(signal.SIGKILL)  # psutil: this very process (PID reuse checked)
        log(f"SIGKILL worker {victim} (pid {process.pid}) after person 0 saw {tokens_at_kill} tokens")

        await asyncio.wait([tasks[0]], timeout=30)
        t_broken = time.perf_counter()
        attempts: list[str] = []
        answer = None
        while time.perf_counter() - t_kill < ANSWER_WITHIN:
            turn = await p0.say(chat, "What's my name?")
            attempts.append("answered" if turn.ok else (turn.error or "?")[:100])
            if turn.ok and turn.text:
                answer = turn
                break
            await asyncio.sleep(0.2)
        worker_after = await p0.worker_now()
        cart = await p0.say(chat, "What's in my cart?") if answer else None

        results = await asyncio.gather(*tasks[1:])
        survivors = [(p, r) for p, r in zip(people[1:], results) if p.worker != victim]
        broken_survivors = [f"person {p.i}: {r.error or 'text differs'}" for p, r in survivors
                            if not (r.ok and r.text == expected_count)]
        same_worker = [(p, r) for p, r in zip(people[1:], results) if p.worker == victim]

        records: list[dict] = []
        read_error = None
        try:
            conversations = (await p0.user.call(list_ep, p0.session_hash, []))[0]
            current = next((c for c in conversations if c.get("current")), conversations[0])
            records = (await p0.user.call(resume_ep, p0.session_hash, [current["id"]]))[0]
        except Exception as error:  # reported, and counted as every turn lost
            read_error = f"{type(error).__name__}: {error}"[:300]
        lost = lost_turns(records, p0.done)
        return {
            "people": len(people), "on_victim_worker": 1 + len(same_worker), "on_surviving_worker": len(survivors),
            "victim_worker": victim, "victim_pid": process.pid, "count_to": count_to,
            "tokens_at_kill": tokens_at_kill, "setup_errors": setup_errors,
            "person0_stream": {"ok": streams[0].ok, "tokens_seen": len(streams[0].text.split()),
                               "error": streams[0].error},
            "kill_to_stream_broken_s": t_broken - t_kill,
            "kill_to_answered_s": (answer.t_done - t_kill) if answer else None,
            "kill_to_answer_first_token_s": (answer.t_first - t_kill) if answer and answer.t_first else None,
            "attempts": attempts, "answered_by_worker": worker_after,
            "name_reply": answer.text if answer else None,
            "name_intact": bool(answer) and answer.text == f"Your name is {p0.name}.",
            "cart_reply": cart.text if cart else None,
            "cart_intact": bool(cart and cart.ok and "2 × " in cart.text and "apple" in cart.text.lower()),
            "turns_checked": len(p0.done), "turns_lost": len(lost) if read_error is None else len(p0.done),
            "lost": lost, "read_error": read_error,
            "interrupted_turn": interrupted(records, long_turn),
            "survivors_whole": len(survivors) - len(broken_survivors), "survivors_broken": broken_survivors,
            "victim_worker_others_broken": sum(1 for _, r in same_worker if not r.ok),
        }
    finally:
        await asyncio.gather(*(p.user.aclose() for p in people), return_exceptions=True)


def failed(res: dict) -> list[str]:
    problems = []
    if res["turns_lost"]:
        problems.append(f"{res['turns_lost']} stored turn(s) lost: {res['lost'] or res['read_error']}")
    if res["kill_to_answered_s"] is None:
        problems.append(f"person 0 not answered within {ANSWER_WITHIN:.0f} s of the kill")
    if not res["name_intact"]:
        problems.append(f"name not intact: {res['name_reply']!r}")
    if not res["cart_intact"]:
        problems.append(f"cart not intact: {res['cart_reply']!r}")
    if res["survivors_broken"]:
        problems.append(f"streams on the surviving worker broke: {res['survivors_broken']}")
    if res["left_behind"]:
        problems.append(f"processes left after the supervisor stopped: {res['left_behind']}")
    return problems


def run(people: int = 20, count_to: int = 300, token_delay: float = TOKEN_DELAY, log=print) -> dict:
    load = loadavg()
    app = SupervisedApp("failover", bench_env(CMW_OFFLINE_TOKEN_DELAY=token_delay), workers=2)
    t0 = time.monotonic()
    with app:
        log(f"supervisor up in {time.monotonic() - t0:.1f} s: {app.url}, workers "
            f"{ {k: p.pid for k, p in app.worker_processes().items()} }")
        res = asyncio.run(scenario(app, people, count_to, log))
    res.update(token_delay_s=token_delay, left_behind=app.left_behind, loadavg_before=load, loadavg_after=loadavg(),
               duration_s=time.monotonic() - t0)
    res["problems"] = failed(res)
    return res


def summary(res: dict) -> str:
    def s(v):
        return "-" if v is None else f"{v:.2f} s"
    lines = [
        f"people: {res['people']} ({res['on_victim_worker']} on worker {res['victim_worker']}, killed; "
        f"{res['on_surviving_worker']} on the other); offline model {res['token_delay_s'] * 1000:.0f} ms/token, "
        f"'Count to {res['count_to']}'",
        f"SIGKILL after person 0 saw {res['tokens_at_kill']} tokens; their stream: {res['person0_stream']['error']}",
        f"time from SIGKILL to the next answered message: {s(res['kill_to_answered_s'])} (first token "
        f"{s(res['kill_to_answer_first_token_s'])}; stream seen broken after {s(res['kill_to_stream_broken_s'])}; "
        f"attempts: {res['attempts']}; answered by worker {res['answered_by_worker']})",
        f"name intact: {res['name_intact']} ({res['name_reply']!r}); cart intact: {res['cart_intact']} "
        f"({(res['cart_reply'] or '')[:80]!r})",
        f"turns lost: {res['turns_lost']} of {res['turns_checked']} completed turns" +
        (f" ({res['lost']})" if res["lost"] else "") + (f"; read error {res['read_error']}" if res["read_error"] else ""),
        "interrupted turn in /resume: " + (" | ".join(f"{r.get('role')}: {_text(r.get('content'))[:60]!r}"
                                                       + (f" {sorted(k for k in r if k not in ('role', 'content'))}"
                                                          if set(r) - {"role", "content"} else "")
                                                       for r in res["interrupted_turn"]) or "(not stored)"),
        f"surviving worker: {res['survivors_whole']}/{res['on_surviving_worker']} streams whole"
        + (f"; broken: {res['survivors_broken']}" if res["survivors_broken"] else "")
        + f"; others on the killed worker with a broken stream: {res['victim_worker_others_broken']}"
        f"/{res['on_victim_worker'] - 1}",
        f"processes left after stop: {res['left_behind'] or 'none'}; load average before "
        f"{res['loadavg_before'][0]:.2f}, after {res['loadavg_after'][0]:.2f}; took {res['duration_s']:.0f} s",
    ]
    return "\n".join(lines)


# what bench/report.py shows (results.md, the targets table)


def targets(fo: dict) -> list[tuple[str, str, str, bool | None]]:
    t = fo.get("kill_to_answered_s")
    return [("failover: SIGKILL -> next message answered", "within seconds", "-" if t is None else f"{t:.2f} s",
             t is not None and t <= 10),
            ("failover: stored turns lost; name and cart intact", "0; yes",
             f"{fo['turns_lost']} of {fo['turns_checked']}; name {'yes' if fo['name_intact'] else 'NO'}, cart "
             f"{'yes' if fo['cart_intact'] else 'NO'}", not fo["turns_lost"] and fo["name_intact"] and fo["cart_intact"]),
            ("failover: streams on the surviving worker finished whole", "all",
             f"{fo['survivors_whole']}/{fo['on_surviving_worker']}", not fo["survivors_broken"])]


def markdown(fo: dict) -> str:
    def sec(v):
        return "-" if v is None else f"{v:.2f} s"
    interrupted = " / ".join(f"{r.get('role')}: {str(r.get('content'))[:40]!r}" for r in fo.get("interrupted_turn", [])) \
        or "(not stored)"
    return (f"`bench/failover.py`: `app_ng.py --workers 2` (HAProxy, SQLite in a temporary data dir), offline model "
            f"at {fo['token_delay_s'] * 1000:.0f} ms/token. {fo['people']} people each told their name and added 2 "
            f"apples to their cart, then all started `Count to {fo['count_to']}`; after person 0 had seen "
            f"{fo['tokens_at_kill']} tokens, worker {fo['victim_worker']} (serving person 0 and "
            f"{fo['on_victim_worker'] - 1} others) got SIGKILL. Person 0 then sent \"What's my name?\" from the same "
            f"page (same cookie and session_hash) until answered. Load average {fo['loadavg_before'][0]:.2f} before, "
            f"{fo['loadavg_after'][0]:.2f} after.\n\n"
            "| figure | value |\n|---|---|\n"
            f"| SIGKILL -> next message answered (completed) | {sec(fo['kill_to_answered_s'])} |\n"
            f"| SIGKILL -> person 0's stream seen broken | {sec(fo['kill_to_stream_broken_s'])} |\n"
            f"| attempts until answered; answering worker | {len(fo['attempts'])}; worker {fo['answered_by_worker']} |\n"
            f"| stored turns lost (of the completed ones) | {fo['turns_lost']} of {fo['turns_checked']} |\n"
            f"| name intact / cart intact | {'yes' if fo['name_intact'] else 'NO'} / {'yes' if fo['cart_intact'] else 'NO'} |\n"
            f"| the interrupted turn in `/resume` | {interrupted} |\n"
            f"| streams on the surviving worker finished whole | {fo['survivors_whole']}/{fo['on_surviving_worker']} |\n"
            f"| other streams on the killed worker broken | {fo['victim_worker_others_broken']}/{fo['on_victim_worker'] - 1} |\n"
            f"| processes left after stopping the supervisor | {len(fo['left_behind'])} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 people, Count to 100")
    parser.add_argument("--people", type=int, default=None)
    parser.add_argument("--count-to", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    people = args.people or (4 if args.quick else 20)
    count_to = args.count_to or (100 if args.quick else 300)
    res = run(people, count_to)
    print(summary(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    if res["problems"]:
        print("FAILED:\n" + "\n".join(f"- {p}" for p in res["problems"]))
        sys.exit(1)


if __name__ == "__main__":
    main()
