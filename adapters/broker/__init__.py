"""The ledger on NATS JetStream: commands and trigger events in, statuses out.

`settings` names the subjects and streams, `intake` turns deliveries into
ledger commands and verdicts, `worker` consumes them (batched nats-py pulls, or
faststream push subscribers) and acks, delays or dead-letters each one,
`status` publishes message status changes from the event log, `messages` holds
the outgoing payloads and `cli` the commands. See docs/broker.md.
"""
