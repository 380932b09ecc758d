"""One module per step of the plan. Each asset applies what `render/` produced and says what changed;
its checks prove the step works (blocking ERROR checks stop the deploy and fail the CLI)."""
