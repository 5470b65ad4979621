//! Memory footprint figures that are sizes, not speeds: the future serving
//! one connection (what every idle connection costs most, since it lives as
//! long as the socket), and the core's record of a connection. Printed against its budget; exits 1 when over it,
//! so a regrowth shows when the benchmarks are run (`cargo bench --bench
//! footprint`), without a size assertion in the test suite.

use std::process::ExitCode;

/// 152 bytes puts the whole task in 256 bytes: tokio's task cell is
/// 128-byte aligned and adds 104 bytes (32 of header, 16 of scheduler and
/// id, an 8-byte stage tag, a 48-byte trailer), so one byte more takes 384.
/// It was 1.2 KiB with the upgrade's state in it; 144 until the connection's
/// handle moved here from the link, whose `Arc` it pushed into the next
/// malloc size (`shell::connection`'s test pins the same bound).
const SERVING_FUTURE_BUDGET: usize = 152;

/// The core's connection record: 528 bytes before its timer table stored
/// offsets instead of seven `Option<Instant>`, 520 after wave 2's features,
/// 448 once the rarely used vectors became lazy, the queue bounds and
/// rate-limit settings `u32` and the open instant an offset, 400 with the
/// identity's lists and name boxed and the queue's frame counts `u32`
/// (issue 18 bounds an idle connection, everything included, at 1.8 KB;
/// `core::connection`'s test pins it too).
const CONNECTION_RECORD_BUDGET: usize = 400;

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
    let record = ws_realtime::core::connection_record_size();
    let record_verdict = if record <= CONNECTION_RECORD_BUDGET {
        "within"
    } else {
        "OVER"
    };
    println!(
        "core connection record: {record} bytes ({record_verdict} the budget of {CONNECTION_RECORD_BUDGET})"
    );
    if size <= SERVING_FUTURE_BUDGET && record <= CONNECTION_RECORD_BUDGET {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
