"""The views' status fold: the domain's rules, whatever order events come in."""

from __future__ import annotations

import uuid

from eventsourcing.utils import get_topic
from hypothesis import given
from hypothesis import strategies as st

from ledger.message import Message
from projections.runtime import RecordedEvent
from projections.timeline import FACT_SETTERS, REPLY_RECEIVED, RETRIED, MessageFacts

MESSAGE = uuid.uuid4()
PROVIDER_TOPICS = sorted(FACT_SETTERS)


def event(topic: str, attempt: int = 1) -> RecordedEvent:
    return RecordedEvent(1, MESSAGE, 2, topic, {"attempt": attempt})


def folded(events: list[RecordedEvent]) -> MessageFacts:
    facts = MessageFacts("outbound")
    for item in events:
        facts.apply(item)
    return facts


@given(st.lists(st.sampled_from(PROVIDER_TOPICS), max_size=8), st.randoms())
def test_provider_reports_in_any_order_give_the_same_status(topics, random):
    shuffled = list(topics)
    random.shuffle(shuffled)

    in_order = folded([event(t) for t in topics])
    reordered = folded([event(t) for t in shuffled])

    assert in_order.status == reordered.status


@given(st.lists(st.sampled_from(PROVIDER_TOPICS), max_size=8))
def test_facts_survive_being_stored_and_loaded(topics):
    facts = folded([event(t) for t in topics])

    loaded = MessageFacts.loads(facts.dumps())

    assert loaded == facts


def test_a_retry_starts_a_fresh_attempt_that_earlier_reports_do_not_touch():
    failed = get_topic(Message.Failed)
    delivered = get_topic(Message.Delivered)

    facts = folded([event(failed), event(RETRIED, 2), event(delivered, 1)])

    assert facts.status == "retried"
    assert facts.attempt(1).delivered


def test_a_reply_marks_the_message_replied_and_an_inbound_one_is_received():
    facts = folded([event(REPLY_RECEIVED)])

    assert facts.replied
    assert MessageFacts("inbound").status == "received"
