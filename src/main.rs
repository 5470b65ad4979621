//! The `ws-realtime` binary.

fn main() {
    eprintln!("ws-realtime: not yet wired");
}
