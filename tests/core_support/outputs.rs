//! The core's outputs taken through `Core::poll_output` and sorted by kind,
//! for tests that look at one kind at a time. Shared by the core tests
//! (`#[path]`-included where a test has no `core_support`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Instant;

use ws_realtime::core::{ConnId, Core, Event, Output, Transmit, VerifyRequest};

/// The core's outputs, sorted by kind as a shell would act on them.
#[derive(Default)]
pub struct Outputs {
    pub transmits: VecDeque<Transmit>,
    pub disconnects: Vec<ConnId>,
    pub events: Vec<Event>,
    /// `refresh` tokens the core asked the shell to verify.
    pub verifies: VecDeque<VerifyRequest>,
    /// The core's next deadline, as of the last drain.
    pub deadline: Option<Instant>,
}

impl Outputs {
    /// Takes every output the core has now.
    pub fn take_from(&mut self, core: &mut Core) {
        loop {
            match core.poll_output() {
                Some(Output::Transmit(transmit)) => self.transmits.push_back(transmit),
                Some(Output::Disconnect(conn)) => self.disconnects.push(conn),
                Some(Output::Event(event)) => self.events.push(event),
                Some(Output::Verify(request)) => self.verifies.push_back(request),
                Some(Output::Timeout(at)) => {
                    self.deadline = Some(at);
                    return;
                }
                None => {
                    self.deadline = None;
                    return;
                }
            }
        }
    }
}
