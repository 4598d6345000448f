//! Daemon mode: rescan every interval, at once on hotplug or SIGHUP; rewrite the file
//! when its key lines change, its expiry runs low, SIGHUP asks, or it is no longer what
//! was written; pace renames for NFD's watcher (a change that comes too soon is written
//! when the gap is over, only the newest state); exit promptly on SIGTERM/SIGINT.

use crate::changes;
use crate::events::Event;
use crate::log;
use crate::model::Warnings;
use crate::output::Sink;
use crate::render;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

pub struct Config {
    pub interval: Duration,
    /// `None`: no expiry directive.
    pub expiry: Option<Duration>,
    pub remove_on_exit: bool,
}

/// A missing root is said at most this often while it stays missing.
const ROOTS_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The last file written.
struct Written {
    body: String,
    content: String,
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

/// One scan's outcome: the body and its warnings, or why the roots cannot be read.
pub type ScanResult = Result<(String, Warnings), String>;

struct Loop<'a> {
    config: &'a Config,
    out: &'a mut dyn Sink,
    last: Option<Written>,
    last_warnings: Warnings,
    /// SIGHUP came: write even if nothing changed.
    forced: bool,
    /// When the roots were last said to be missing (`None`: they are fine).
    roots_warned: Option<Instant>,
}

impl Loop<'_> {
    /// Handles one scan; returns how long until the pending write is due, if one is.
    fn step(&mut self, scan: ScanResult) -> Option<Duration> {
        let (body, warnings) = match scan {
            Ok(s) => s,
            Err(why) => {
                // Keep the file as it is: what a scan of nothing would say is not true,
                // and the expiry retires the labels if the roots stay gone.
                if self
                    .roots_warned
                    .is_none_or(|t| t.elapsed() >= ROOTS_WARNING_EVERY)
                {
                    log::warning(format_args!(
                        "{why}; keeping the last file until it returns"
                    ));
                    self.roots_warned = Some(Instant::now());
                }
                return None;
            }
        };
        if self.roots_warned.take().is_some() {
            log::info("the roots are back; scanning again");
        }
        // The same broken attribute would repeat its warning every interval: say it
        // once, and again only when the set of warnings changes.
        if warnings != self.last_warnings {
            log::warnings(&warnings);
            self.last_warnings = warnings;
        }
        let now = SystemTime::now();
        let replaced = self
            .last
            .as_ref()
            .is_some_and(|l| !self.out.holds(&l.content));
        if !(self.forced
            || replaced
            || needs_write(self.last.as_ref(), &body, self.config.expiry, now))
        {
            return None;
        }
        // Prepared first (a staging directory made now is an event too), then paced.
        if let Err(e) = self.out.prepare() {
            log::error(format_args!(
                "{e}; retrying in {}",
                humantime::format_duration(self.config.interval)
            ));
            return None;
        }
        let due = self.out.due_in();
        if !due.is_zero() {
            return Some(due);
        }
        let expires = self.config.expiry.map(|d| now + d);
        let content = render::render(&body, expires);
        match self.out.write(&content) {
            Ok(()) => {
                self.describe_write(&body, replaced);
                self.forced = false;
                self.last = Some(Written {
                    body,
                    content,
                    expires,
                });
            }
            Err(e) => {
                log::error(format_args!(
                    "{e}; retrying in {}",
                    humantime::format_duration(self.config.interval)
                ));
                self.last = None;
            }
        }
        None
    }

    fn describe_write(&self, body: &str, replaced: bool) {
        let path = self.out.name();
        if replaced {
            log::warning(format_args!(
                "{path} was removed or changed by someone else; wrote it again"
            ));
        }
        let old = self.last.as_ref().map(|l| l.body.as_str());
        let changes = changes::label_changes(old.unwrap_or(""), body);
        match (old, changes.is_empty()) {
            (None, _) => log::info(format_args!(
                "wrote {path}: {}",
                if changes.is_empty() {
                    "no Coral labels".to_string()
                } else {
                    changes.join(", ")
                }
            )),
            (Some(_), false) => log::info(format_args!("wrote {path}: {}", changes.join(", "))),
            // An expiry refresh or a rewrite asked for: nothing worth a line.
            (Some(_), true) => {}
        }
    }
}

/// Runs until a Stop event. `scan` returns the body of the feature file and the
/// warnings of that scan, or why the roots cannot be scanned.
pub fn run(
    config: &Config,
    out: &mut dyn Sink,
    events: Receiver<Event>,
    mut scan: impl FnMut() -> ScanResult,
) {
    let mut l = Loop {
        config,
        out,
        last: None,
        last_warnings: Warnings::default(),
        forced: false,
        roots_warned: None,
    };
    let mut stopping = false;
    loop {
        let pending = l.step(scan());
        if stopping {
            // The newest state is written before leaving, after the gap if need be.
            match pending {
                Some(due) => {
                    std::thread::sleep(due);
                    continue;
                }
                None => break,
            }
        }
        let wait = pending.map_or(config.interval, |d| d.min(config.interval));
        match events.recv_timeout(wait) {
            Ok(Event::Reload) => l.forced = true,
            Ok(Event::Rescan) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => {
                // A pending change is written before leaving, unless the file is about
                // to be removed anyway.
                if pending.is_none() || config.remove_on_exit {
                    break;
                }
                stopping = true;
            }
        }
    }
    if config.remove_on_exit {
        std::thread::sleep(l.out.due_in());
        if let Err(e) = l.out.remove() {
            log::error(e);
        }
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
            content: String::new(),
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
            content: String::new(),
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
