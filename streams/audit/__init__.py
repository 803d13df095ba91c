"""The audit from the log alone (SPEC §7): re-derive every decision and halt from the sequenced log.

`core` is pure (no Kafka, no clock: the caller passes the time): it re-derives each partition of the
sequenced log with the worker's own level chain, matches derived and recorded outputs by id and says
what does not agree. `kafka` is the shell: `riskguard audit` once, and `riskguard audit --follow`, the
long-running audit consumer with its own `/metrics`.
"""
