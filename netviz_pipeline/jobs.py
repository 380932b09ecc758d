"""netviz_deploy: every asset and its checks. netviz_verify: the checks only, for health.

Both run in-process: the steps are I/O-bound and share one API client, and the multiprocess
executor's per-step process start (~1 s each) would dominate a converged run.
"""
from __future__ import annotations

import dagster as dg

ALL_ASSETS = dg.AssetSelection.all()

netviz_deploy = dg.define_asset_job("netviz_deploy", selection=ALL_ASSETS, executor_def=dg.in_process_executor,
                                    description="Deploy every step of the plan and prove each one")
netviz_verify = dg.define_asset_job("netviz_verify", selection=dg.AssetSelection.all_asset_checks(),
                                    executor_def=dg.in_process_executor,
                                    description="Run every check without changing anything")
