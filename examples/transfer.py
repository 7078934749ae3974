"""The transfer saga: a failed deposit is compensated by a refund, then the failure re-raised."""

from __future__ import annotations

from datetime import timedelta

from runtime import ActivityError, ApplicationError, RetryPolicy, activity, workflow

_TIMEOUT = timedelta(seconds=30)


@activity.defn
async def withdraw(account: str, amount: int) -> str:
    return f"withdrew {amount} from {account}"


@activity.defn
async def deposit(account: str, amount: int) -> str:
    if account.startswith("closed-"):
        raise ApplicationError(f"account {account} is closed", type="AccountClosed")
    return f"deposited {amount} to {account}"


@activity.defn
async def refund(account: str, amount: int) -> str:
    return f"refunded {amount} to {account}"


@workflow.defn
async def transfer(source: str, target: str, amount: int) -> list[str]:
    done = [
        await workflow.execute_activity(withdraw, source, amount, start_to_close_timeout=_TIMEOUT)
    ]
    try:
        done.append(
            await workflow.execute_activity(
                deposit,
                target,
                amount,
                start_to_close_timeout=_TIMEOUT,
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(milliseconds=100),
                    maximum_attempts=3,
                    non_retryable_error_types=["AccountClosed"],
                ),
            )
        )
    except ActivityError:
        await workflow.execute_activity(refund, source, amount, start_to_close_timeout=_TIMEOUT)
        raise
    return done


WORKFLOWS = [transfer]
ACTIVITIES = [withdraw, deposit, refund]
