//! Daemon mode: rescan every interval (or at once on SIGHUP), rewrite the file only
//! when its key lines change or its expiry runs low, exit promptly on SIGTERM/SIGINT.

use crate::features;
use crate::output::{self, AtomicFile};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

/// What wakes the loop before its interval is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Rescan,
    Stop,
}

pub struct Config {
    pub interval: Duration,
    /// `None`: no expiry directive.
    pub expiry: Option<Duration>,
    pub remove_on_exit: bool,
}

/// The last file written.
struct Written {
    body: String,
    expires: Option<SystemTime>,
}

/// Whether the file must be rewritten: content changed, or less than half the expiry
/// is left (so NFD never drops labels of a labeler that is still running).
fn needs_write(
    last: Option<&Written>,
    body: &str,
    expiry: Option<Duration>,
    now: SystemTime,
) -> bool {
    let Some(last) = last else { return true };
    if last.body != body {
        return true;
    }
    match (last.expires, expiry) {
        (Some(at), Some(expiry)) => at.duration_since(now).unwrap_or_default() < expiry / 2,
        _ => false,
    }
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
                    Event::Rescan
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

/// Runs until a Stop event. `scan` returns the body of the feature file and the
/// warnings of that scan.
pub fn run(
    config: &Config,
    out: &AtomicFile,
    events: Receiver<Event>,
    mut scan: impl FnMut() -> (String, Vec<String>),
) {
    out.clean_stale();
    let mut last: Option<Written> = None;
    let mut last_warnings: Vec<String> = Vec::new();
    loop {
        let (body, warnings) = scan();
        // The same broken attribute would repeat its warning every interval: say it
        // once, and again only when the set of warnings changes.
        if warnings != last_warnings {
            output::print_warnings(&warnings);
            last_warnings = warnings;
        }
        let now = SystemTime::now();
        if needs_write(last.as_ref(), &body, config.expiry, now) {
            let expires = config.expiry.map(|d| now + d);
            match out.write(&features::render(&body, expires)) {
                Ok(()) => last = Some(Written { body, expires }),
                Err(e) => {
                    eprintln!(
                        "coral-nfd: error: {e}; retrying in {}",
                        humantime::format_duration(config.interval)
                    );
                    last = None;
                }
            }
        }
        match events.recv_timeout(config.interval) {
            Ok(Event::Rescan) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    if config.remove_on_exit
        && let Err(e) = out.remove()
    {
        eprintln!("coral-nfd: error: {e}");
    }
}

/// A channel for [`run`], fed by the signal handlers.
pub fn events() -> std::io::Result<(Sender<Event>, Receiver<Event>)> {
    let (tx, rx) = mpsc::channel();
    signal_events(tx.clone())?;
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_rules() {
        let now = SystemTime::now();
        let minute = Duration::from_secs(60);
        let w = Written {
            body: "a=1\n".into(),
            expires: Some(now + 3 * minute),
        };
        assert!(needs_write(None, "a=1\n", None, now));
        assert!(!needs_write(Some(&w), "a=1\n", Some(3 * minute), now));
        assert!(needs_write(Some(&w), "a=2\n", Some(3 * minute), now));
        // 1.5 minutes left of 3: refresh.
        assert!(needs_write(
            Some(&w),
            "a=1\n",
            Some(3 * minute),
            now + 91 * minute / 60
        ));
        let no_expiry = Written {
            body: "a=1\n".into(),
            expires: None,
        };
        assert!(!needs_write(
            Some(&no_expiry),
            "a=1\n",
            None,
            now + 1000 * minute
        ));
    }
}
