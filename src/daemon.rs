//! Daemon mode: rescan every interval, at once on hotplug or SIGHUP; rewrite the file
//! when its key lines change, its expiry runs low, SIGHUP asks, or it is no longer what
//! was written; pace renames for NFD's watcher (a change that comes too soon is written
//! when the gap is over, only the newest state); keep the last file when a scan cannot
//! be trusted; exit promptly on SIGTERM/SIGINT, and with an error when the output is
//! gone for good (a closed pipe) or another coral-nfd took it.

use crate::changes;
use crate::events::Event;
use crate::log;
use crate::metrics::LabelerStats;
use crate::model::{Inventory, Warnings};
use crate::output::Sink;
use crate::render;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub struct Config {
    pub interval: Duration,
    /// `None`: no expiry directive.
    pub expiry: Option<Duration>,
    pub remove_on_exit: bool,
}

/// A scan problem is said at most this often while it stays the same.
const PROBLEM_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Whether a problem is to be said now: never said, different from the one said
/// `last`, or said longer ago than [`PROBLEM_WARNING_EVERY`].
fn time_to_say<T: PartialEq>(last: Option<&(T, Instant)>, now: &T) -> bool {
    last.is_none_or(|(said, at)| said != now || at.elapsed() >= PROBLEM_WARNING_EVERY)
}

/// A scan that may be published.
pub struct Scanned {
    /// The feature file's key lines.
    pub body: String,
    pub warnings: Warnings,
    /// What it found, for `/metrics`.
    pub inventory: Inventory,
}

/// Why a scan must not be published; the file on disk stays as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// A root is missing or not a sysfs tree (an unmounted hostPath).
    Roots(String),
    /// Something that decides which devices exist could not be read.
    Incomplete(String),
}

/// One scan's outcome.
pub type ScanResult = Result<Scanned, ScanError>;

/// What the daemon has seen, for `/metrics`: the last complete scan and the counters.
#[derive(Debug, Default)]
pub struct Observed {
    pub inventory: Option<Inventory>,
    pub stats: LabelerStats,
}

pub type Shared = Arc<Mutex<Observed>>;

/// The last file written.
struct Written {
    body: String,
    content: String,
    expires: Option<SystemTime>,
}

/// How long until the file written last must be refreshed: when half its expiry is
/// left (so NFD never drops labels of a labeler that is still running). `None`: it
/// has no expiry, or there is no file yet.
fn refresh_in(
    last: Option<&Written>,
    expiry: Option<Duration>,
    now: SystemTime,
) -> Option<Duration> {
    let (at, expiry) = (last?.expires?, expiry?);
    Some(
        at.duration_since(now)
            .unwrap_or_default()
            .saturating_sub(expiry / 2),
    )
}

/// Whether the file must be rewritten: content changed, or its refresh is due.
fn needs_write(
    last: Option<&Written>,
    body: &str,
    expiry: Option<Duration>,
    now: SystemTime,
) -> bool {
    let Some(l) = last else { return true };
    l.body != body || refresh_in(last, expiry, now).is_some_and(|d| d.is_zero())
}

struct Loop<'a> {
    config: &'a Config,
    out: &'a mut dyn Sink,
    shared: Option<&'a Shared>,
    last: Option<Written>,
    last_warnings: Warnings,
    /// SIGHUP came: write even if nothing changed.
    forced: bool,
    /// The scan problem last said, and when (`None`: scans are fine).
    problem: Option<(ScanError, Instant)>,
    /// The lock problem last said, and when.
    lock_problem: Option<(String, Instant)>,
}

impl Loop<'_> {
    fn observe(&self, f: impl FnOnce(&mut Observed)) {
        if let Some(shared) = self.shared {
            // A poisoned lock means the metrics thread panicked: keep labelling.
            if let Ok(mut o) = shared.lock() {
                f(&mut o);
            }
        }
    }

    /// Still the only writer, and still read? Takes the lock again on a staging
    /// directory that was removed; another writer having taken it, or a stdout whose
    /// reader went away, ends the daemon.
    fn check_output(&mut self) -> Result<(), String> {
        match self.out.check() {
            // Fine; if a problem was said, the write path has taken the lock since.
            Ok(false) if self.lock_problem.is_none() => Ok(()),
            Ok(_) => {
                self.lock_problem = None;
                log::warning(format_args!(
                    "{}: its staging directory was removed or replaced; locked it again",
                    self.out.name()
                ));
                Ok(())
            }
            Err(e) if e.fatal => Err(e.message),
            // Tried again at every wake-up; said once a minute, or when it changes.
            Err(e) => {
                if time_to_say(self.lock_problem.as_ref(), &e.message) {
                    log::error(&e);
                    self.lock_problem = Some((e.message, Instant::now()));
                }
                Ok(())
            }
        }
    }

    /// A scan that must not be published: said once a minute, or when it changes.
    fn keep_last(&mut self, why: ScanError) {
        self.observe(|o| match why {
            ScanError::Roots(_) => o.stats.scans_roots_unusable += 1,
            ScanError::Incomplete(_) => o.stats.scans_incomplete += 1,
        });
        if time_to_say(self.problem.as_ref(), &why) {
            // The expiry retires the labels if this lasts; until then the last file
            // is truer than a scan of part of the hardware, or of nothing.
            match &why {
                ScanError::Roots(m) => {
                    log::warning(format_args!("{m}; keeping the last file until it returns"))
                }
                ScanError::Incomplete(m) => {
                    log::warning(format_args!("{m}; nothing written, keeping the last file"))
                }
            }
            self.problem = Some((why, Instant::now()));
        }
    }

    /// Handles one scan; returns how long until the pending write is due, if one is,
    /// or why the daemon must stop.
    fn step(&mut self, scan: ScanResult) -> Result<Option<Duration>, String> {
        let Scanned {
            body,
            warnings,
            inventory,
        } = match scan {
            Ok(s) => s,
            Err(why) => {
                self.keep_last(why);
                return Ok(None);
            }
        };
        match self.problem.take() {
            Some((ScanError::Roots(_), _)) => log::info("the roots are back; scanning again"),
            Some((ScanError::Incomplete(_), _)) => {
                log::info("the scan is complete again; writing as before")
            }
            None => {}
        }
        self.observe(|o| {
            o.stats.scans_complete += 1;
            o.stats.last_warnings = warnings.len() as u64;
            o.inventory = Some(inventory);
        });
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
            return Ok(None);
        }
        // Prepared first (a staging directory made now is an event too), then paced.
        if let Err(e) = self.out.prepare() {
            if e.fatal {
                return Err(e.message);
            }
            // A lock problem was just said, rate-limited, by check_output: the same
            // cause, not to be repeated at every wake-up.
            if self.lock_problem.is_none() {
                log::error(format_args!(
                    "{e}; retrying in {}",
                    humantime::format_duration(self.config.interval)
                ));
            }
            // Written again at the next interval, as after a failed write, and counted as
            // one: nothing reached the file.
            self.observe(|o| o.stats.writes_failure += 1);
            self.last = None;
            return Ok(None);
        }
        let due = self.out.due_in();
        if !due.is_zero() {
            return Ok(Some(due));
        }
        let expires = self.config.expiry.map(|d| now + d);
        let content = render::render(&body, expires);
        match self.out.write(&content) {
            Ok(()) => {
                self.observe(|o| {
                    o.stats.writes_success += 1;
                    o.stats.expiry = expires;
                });
                self.describe_write(&body, replaced);
                self.forced = false;
                self.last = Some(Written {
                    body,
                    content,
                    expires,
                });
            }
            Err(e) => {
                self.observe(|o| o.stats.writes_failure += 1);
                if e.fatal {
                    return Err(e.message);
                }
                log::error(format_args!(
                    "{e}; retrying in {}",
                    humantime::format_duration(self.config.interval)
                ));
                self.last = None;
            }
        }
        Ok(None)
    }

    fn describe_write(&self, body: &str, replaced: bool) {
        let path = self.out.name();
        if replaced {
            log::warning(format_args!(
                "{path} was removed or changed by someone else; wrote it again"
            ));
        }
        let Some(old) = self.last.as_ref().map(|l| l.body.as_str()) else {
            // The first write: its labels (the raw features would only repeat them).
            let labels = changes::label_changes("", body);
            log::info(format_args!(
                "wrote {path}: {}",
                if labels.is_empty() {
                    "no Coral labels".to_string()
                } else {
                    labels.join(", ")
                }
            ));
            return;
        };
        let changes = changes::all_changes(old, body);
        if !changes.is_empty() {
            log::info(format_args!("wrote {path}: {}", changes.join(", ")));
        } else if self.forced {
            log::info(format_args!("wrote {path} again (SIGHUP): no change"));
        }
        // Otherwise an expiry refresh: nothing changed, nothing worth a line.
    }
}

/// Runs until a Stop event (Ok), or until the output is gone for good or taken by
/// another coral-nfd (Err, with why). `scan` returns the next scan's outcome.
pub fn run(
    config: &Config,
    out: &mut dyn Sink,
    events: Receiver<Event>,
    shared: Option<&Shared>,
    mut scan: impl FnMut() -> ScanResult,
) -> Result<(), String> {
    let mut l = Loop {
        config,
        out,
        shared,
        last: None,
        last_warnings: Warnings::default(),
        forced: false,
        problem: None,
        lock_problem: None,
    };
    let mut stopping = false;
    let mut pending = None;
    let mut scan_due = true;
    let mut wait = Duration::ZERO;
    loop {
        l.check_output()?;
        if scan_due {
            pending = l.step(scan())?;
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
            // The next scan: the interval, sooner when a write is pending or the file's
            // refresh falls due first (a rescan in between must not put it off).
            // Not while a write is pending (it is the refresh, held back by pacing: a
            // refresh already due would make the wait 0 and rescan in a loop until
            // then), nor while scans cannot be published (nothing would be written, and
            // the refresh would be due again at once).
            let refresh = match (&l.problem, pending) {
                (None, None) => refresh_in(l.last.as_ref(), config.expiry, SystemTime::now()),
                _ => None,
            };
            wait = [pending, refresh]
                .into_iter()
                .flatten()
                .fold(config.interval, Duration::min);
        }
        scan_due = true;
        let waiting = Instant::now();
        match events.recv_timeout(wait) {
            Ok(Event::Reload) => l.forced = true,
            Ok(Event::Rescan) | Err(RecvTimeoutError::Timeout) => {}
            // Only the lock check (at the top): the scan keeps its own time.
            Ok(Event::Output) => {
                scan_due = false;
                wait = wait.saturating_sub(waiting.elapsed());
            }
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
    Ok(())
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
        // 1.5 minutes left of 3: refresh, and not a moment later than that.
        assert!(needs_write(
            Some(&w),
            "a=1\n",
            Some(3 * minute),
            now + 90 * minute / 60
        ));
        assert_eq!(
            refresh_in(Some(&w), Some(3 * minute), now),
            Some(90 * minute / 60)
        );
        assert_eq!(
            refresh_in(Some(&w), Some(3 * minute), now + 2 * minute),
            Some(Duration::ZERO)
        );
        assert_eq!(refresh_in(None, Some(3 * minute), now), None);
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

    /// A refresh that falls due while pacing holds the write back waits for the pacing,
    /// once: it does not rescan in a loop until then.
    #[test]
    fn a_paced_refresh_does_not_spin() {
        struct Paced {
            until: Arc<Mutex<Instant>>,
            written: Option<String>,
        }
        impl Sink for Paced {
            fn name(&self) -> String {
                "paced".into()
            }
            fn due_in(&self) -> Duration {
                let until = *self.until.lock().unwrap();
                until.saturating_duration_since(Instant::now())
            }
            fn holds(&self, c: &str) -> bool {
                self.written.as_deref() == Some(c)
            }
            fn write(&mut self, c: &str) -> Result<(), crate::output::SinkError> {
                self.written = Some(c.into());
                Ok(())
            }
            fn remove(&mut self) -> Result<(), String> {
                Ok(())
            }
        }
        // Written at 0 with a 4 s expiry: the refresh is due at 2 s, and from 1.4 s
        // on pacing holds writes until 2.5 s.
        let config = Config {
            interval: Duration::from_secs(60),
            expiry: Some(Duration::from_secs(4)),
            remove_on_exit: false,
        };
        let until = Arc::new(Mutex::new(Instant::now()));
        let mut out = Paced {
            until: until.clone(),
            written: None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let start = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(3500));
            let _ = tx.send(Event::Stop);
        });
        let mut scans = 0;
        run(&config, &mut out, rx, None, || {
            scans += 1;
            if start.elapsed() > Duration::from_millis(1400) && scans < 3 {
                *until.lock().unwrap() = Instant::now() + Duration::from_millis(1100);
            }
            Ok(Scanned {
                body: "a=1\n".into(),
                warnings: Warnings::default(),
                inventory: Inventory::default(),
            })
        })
        .unwrap();
        assert!(scans < 10, "{scans} scans in 3.5 s");
    }
}
