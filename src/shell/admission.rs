//! Connection limits applied from the moment a TCP connection is accepted,
//! before a byte of HTTP is parsed: `WS_MAX_CONNECTIONS` and
//! `WS_MAX_CONNECTIONS_PER_IP` count every socket the server holds (waiting
//! for its request head, upgraded, or anything in between), so a client
//! cannot pin memory with connections that never authenticate.
//!
//! The core keeps its own count of upgraded connections (it decides and
//! reports refusals for them); this one is the outer bound, counted where
//! the sockets are, and released when the socket is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::core::Refusal;
use crate::shell::socket::lock;
use crate::shell::upgrade::UpgradeRefusal;

/// How long a refused socket may take to read its 429 before it is dropped.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Most bytes of a refused client's request read (and dropped) so that
/// closing does not reset the connection before the 429 is read.
const REFUSAL_DRAIN: usize = 16 * 1024;

/// Counts of the sockets the server holds, in all and per address.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    /// Shared with every [`Admitted`] guard, which decrements on drop.
    counts: Arc<Mutex<Counts>>,
    /// `WS_MAX_CONNECTIONS`; 0 = unlimited.
    max_total: usize,
    /// `WS_MAX_CONNECTIONS_PER_IP`; 0 = unlimited.
    max_per_address: usize,
}

/// The numbers behind [`Admission`].
#[derive(Debug, Default)]
struct Counts {
    /// Sockets held in all.
    total: usize,
    /// Sockets held per remote address; an address leaves the map at 0, so
    /// the map is as large as the set of addresses connected now.
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted socket's share of the counts; dropping it releases it.
/// Held by the HTTP connection while it parses requests and, after an
/// upgrade, by the WebSocket connection until its socket is dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Where to give the share back.
    counts: Arc<Mutex<Counts>>,
    /// The address counted.
    address: IpAddr,
}

impl Admission {
    /// Limits of 0 mean unlimited.
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Admission {
        Admission {
            counts: Arc::default(),
            max_total,
            max_per_address,
        }
    }

    /// Counts a new socket from `address`, or says which limit refuses it.
    pub(crate) fn admit(&self, address: IpAddr) -> Result<Arc<Admitted>, Refusal> {
        let mut counts = lock(&self.counts);
        if self.max_total > 0 && counts.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        let from_address = counts.per_address.get(&address).copied().unwrap_or(0);
        if self.max_per_address > 0 && from_address >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        counts.total += 1;
        *counts.per_address.entry(address).or_default() += 1;
        Ok(Arc::new(Admitted {
            counts: self.counts.clone(),
            address,
        }))
    }

    /// Sockets held now (tests and diagnostics).
    #[cfg(test)]
    fn held(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

/// Answers a socket refused at accept with the same 429 JSON an upgrade
/// refusal gets, without parsing its request: reads (and drops) a bounded
/// amount of what it sent so the close is a FIN, not a reset that could
/// destroy the answer, and gives up after [`REFUSAL_GRACE`].
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, refusal: Refusal) {
    let refusal = UpgradeRefusal::from_core(refusal);
    let body = refusal.body();
    let response = format!(
        "HTTP/1.1 {} Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    let answer = async {
        let mut sink = [0u8; 1024];
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut drained = 0;
        while drained < REFUSAL_DRAIN {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_GRACE, answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_per_address_limit_counts_held_sockets_and_frees_on_drop() {
        let admission = Admission::new(0, 2);
        let first = admission.admit(A).unwrap();
        let _second = admission.admit(A).unwrap();
        assert_eq!(admission.admit(A).unwrap_err(), Refusal::TooManyFromAddress);
        assert!(admission.admit(B).is_ok());
        drop(first);
        assert!(admission.admit(A).is_ok());
    }

    #[test]
    fn the_total_limit_refuses_every_address() {
        let admission = Admission::new(1, 0);
        let held = admission.admit(A).unwrap();
        assert_eq!(admission.admit(B).unwrap_err(), Refusal::TooManyConnections);
        drop(held);
        assert_eq!(admission.held(), 0);
        assert!(admission.admit(B).is_ok());
    }
}
