//! The tokio half of a guest call's deadline: [`within`], a timeout that
//! costs nothing for a call finishing in its first poll.
//!
//! The epoch deadline stops a guest that runs wasm past its deadline, but
//! not one suspended awaiting a host future (the channel layer, Redis):
//! that takes a tokio timer. `tokio::time::timeout` builds one per call,
//! and dropping it takes the runtime's timer lock even when it was never
//! registered, on every call. Most calls (an echo, a chat message into the
//! in-memory layer) finish in the poll that starts them and never wait; so
//! the timer is made only when the call first returns `Pending`, for the
//! same instant a timeout made at the start would have used.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

/// The call ran past its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Run `future` until `deadline`: its output, or [`Elapsed`] once the
/// deadline passed with the future still pending. Like
/// `tokio::time::timeout_at`, the future is polled first, so one that is
/// ready is never cut short; the timer is polled outside tokio's
/// cooperative budget, so a call that spent the budget still times out.
pub(crate) async fn within<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer = pin!(None::<tokio::task::coop::Unconstrained<Sleep>>);
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if timer.is_none() {
            timer.set(Some(tokio::task::coop::unconstrained(
                tokio::time::sleep_until(deadline),
            )));
        }
        let Some(sleep) = timer.as_mut().as_pin_mut() else {
            unreachable!("set above");
        };
        sleep.poll(cx).map(|()| Err(Elapsed))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_wins_even_past_its_deadline() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(within(past, async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_future_is_cut_at_the_deadline_not_later() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let never = std::future::pending::<()>();
        assert_eq!(within(deadline, never).await, Err(Elapsed));
        // Paused time: the clock advanced straight to the timer.
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_start_not_the_first_wait() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        // Busy for 200 ms (paused time advanced by hand) before it first
        // waits: the timer still fires at the deadline, 100 ms later.
        let call = async {
            tokio::time::advance(Duration::from_millis(200)).await;
            std::future::pending::<()>().await;
        };
        assert_eq!(within(deadline, call).await, Err(Elapsed));
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_finishes_in_time_returns_its_output() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let call = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            "done"
        };
        assert_eq!(within(deadline, call).await, Ok("done"));
    }
}
