"""The execution core: how an order fills, what it costs and how a target becomes shares.

One implementation under both worlds: the backtest kernel (backtest/kernel.py) compiles
these functions into its loop, and the paper broker (live/brokers/paper.py) calls them on
each live bar, so a paper fill and a backtest fill of the same order on the same bar are the
same number. Neither world imports the other; both import this.

- `settings.EngineSettings`: every execution, cost, liquidity and exit rule, one frozen object.
- `params.pack`: those settings as the flat vectors the compiled code reads.
- `fills`: fill prices of market / limit / stop / stop-limit orders on a bar (gaps fill at
  the open), slippage, half-spread, commission.
- `costs.CostModel`: the same fill and cost functions for callers outside the compiled loop.
- `orders`: target weight -> shares, the rebalance band, leverage and cash room.

Plugging in (what builds on this core):
- A reinforcement-learning environment steps through these rules: each action is a row of
  target weights, turned into shares by `orders.target_shares` / `order_delta`, filled at the
  next bar by `fills` under one `EngineSettings`, so its rewards are the fills the backtest
  would make. It should call the backtest engine over its episode, or these functions bar
  by bar, never re-implement them.
- A market's trading rules (e.g. China A-shares: board lots, T+1 sells, price limits, stamp
  duty on sells) are settings and rule functions here, chosen by the run's market, so the
  backtest and the paper broker both obey them; strategies never test `market == ...`.

Layer: imports data, risk and errors only; imported by backtest/, live/ and the app layer.
"""
