"""The four guard levels, one package each: its stage (state, `process`, `touched`), rules and snapshot.

Run order on every event: `market` (Level 2) -> `account` (Level 1) -> `symbol` (Level 3) ->
`portfolio` (Level 4). What they hand each other is `streams.core.items`; the chain that runs them is
`streams.core.engine`.
"""
