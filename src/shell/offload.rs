//! Token verification off the driver's way. An RS256 or ES256 signature
//! check costs 50–200 µs of CPU; a connect storm is thousands of them. Run
//! on the runtime's worker threads, they would queue ahead of the driver and
//! delay every other client's fan-out, so on a multi-threaded runtime they
//! go to the blocking pool, where the OS shares the CPU with the workers
//! instead. On a single-threaded runtime (the simulation, whose schedule
//! must stay deterministic) they run in place: there is no other thread.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work` (CPU-bound, short) where it cannot hold up the driver.
pub(crate) async fn off_the_workers<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if Handle::current().runtime_flavor() != RuntimeFlavor::MultiThread {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        // The work panicked: let the caller's task see the same panic.
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}
