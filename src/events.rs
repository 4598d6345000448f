//! What wakes the daemon loop before its interval is over, and where it comes from:
//! signals (here), hotplug and the output's directory ([`crate::hotplug`]). All send
//! into one channel.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::mpsc::{self, Receiver, Sender};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Something may have changed (hotplug): scan now, write if the result differs.
    Rescan,
    /// SIGHUP: scan now and write the file whatever it holds.
    Reload,
    /// SIGTERM, SIGINT.
    Stop,
    /// Something happened to the output's staging directory (removed, replaced): check
    /// that the lock is still on it. No rescan.
    Output,
}

/// Turns SIGTERM/SIGINT/SIGHUP into events. The signal thread blocks in a read, so it
/// adds no wakeups of its own.
pub fn signal_events(tx: Sender<Event>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = if sig == SIGHUP {
                    Event::Reload
                } else {
                    Event::Stop
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// A channel for the daemon loop, already fed by the signal handlers; the sender is
/// for other sources.
pub fn channel() -> std::io::Result<(Sender<Event>, Receiver<Event>)> {
    let (tx, rx) = mpsc::channel();
    signal_events(tx.clone())?;
    Ok((tx, rx))
}
