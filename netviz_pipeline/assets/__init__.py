"""One module per step of the plan. Each asset applies what `render/` produced and says what changed;
its checks prove the step works (blocking ERROR checks stop the deploy and fail the CLI)."""

# Who answers for these assets in the Dagster UI (owners must be a team or an e-mail address).
OWNERS = ["team:netviz"]
