//! Daemon mode: rescan every interval (or at once on SIGHUP), rewrite the file only
//! when its key lines change or its expiry runs low, exit promptly on SIGTERM/SIGINT.

use crate::events::Event;
use crate::log;
use crate::model::Warnings;
use crate::output::AtomicFile;
use crate::render;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime};

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

/// Runs until a Stop event. `scan` returns the body of the feature file and the
/// warnings of that scan.
pub fn run(
    config: &Config,
    out: &AtomicFile,
    events: Receiver<Event>,
    mut scan: impl FnMut() -> (String, Warnings),
) {
    out.clean_stale();
    let mut last: Option<Written> = None;
    let mut last_warnings = Warnings::default();
    loop {
        let (body, warnings) = scan();
        // The same broken attribute would repeat its warning every interval: say it
        // once, and again only when the set of warnings changes.
        if warnings != last_warnings {
            log::warnings(&warnings);
            last_warnings = warnings;
        }
        let now = SystemTime::now();
        if needs_write(last.as_ref(), &body, config.expiry, now) {
            let expires = config.expiry.map(|d| now + d);
            match out.write(&render::render(&body, expires)) {
                Ok(()) => last = Some(Written { body, expires }),
                Err(e) => {
                    log::error(format_args!(
                        "{e}; retrying in {}",
                        humantime::format_duration(config.interval)
                    ));
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
        log::error(e);
    }
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
