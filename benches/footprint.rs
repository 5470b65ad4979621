//! Memory footprint figures that are sizes, not speeds: the future serving
//! one connection (what every idle connection costs most, since it lives as
//! long as the socket). Printed against its budget; exits 1 when over it,
//! so a regrowth shows when the benchmarks are run (`cargo bench --bench
//! footprint`), without a size assertion in the test suite.

use std::process::ExitCode;

/// 144 bytes puts the whole task (tokio adds ~100 bytes, in 128-byte steps)
/// in 256 bytes. It was 1.2 KiB with the upgrade's state in it.
const SERVING_FUTURE_BUDGET: usize = 144;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let size = runtime
        .block_on(ws_realtime::shell::serving_future_size())
        .expect("a loopback socket pair");
    let verdict = if size <= SERVING_FUTURE_BUDGET {
        "within"
    } else {
        "OVER"
    };
    println!("serve() future: {size} bytes ({verdict} the budget of {SERVING_FUTURE_BUDGET})");
    if size <= SERVING_FUTURE_BUDGET {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
