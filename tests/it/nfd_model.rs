//! A model of how nfd-worker v0.19.0 notices feature files, written from its source
//! (kubernetes-sigs/node-feature-discovery at v0.19.0, `source/local/local.go`):
//!
//! - `createWatcher`: one fsnotify watch on `features.d` itself, not recursive. fsnotify
//!   v1 on Linux adds it with IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_MODIFY |
//!   IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB (Create, Write, Remove,
//!   Rename, Chmod).
//! - `runNotifier`: `rateLimit := time.NewTicker(time.Second)` from the watcher's start;
//!   an event whose op is any of `Create|Write|Remove|Rename|Chmod` sends a notification
//!   only `if !limit`, then sets `limit = true`; only the tick sets `limit = false`.
//!   Every other event before the next tick is dropped, not delayed. No name is
//!   filtered: dot files trigger too.
//! - On the notification the worker runs `Discover` at once: `getFeaturesFromFiles`
//!   reads every regular file whose name does not start with '.', parsed as a feature
//!   file (here: through the project's own parser, [`parse_nfd`]).
//!
//! The model records each event (triggering or dropped) and each read. coral-nfd's last
//! write is safe only if its event was a triggering one: a dropped one is seen only if
//! the read of an earlier event happened to come late enough, a race NFD does not
//! promise to win. So a test passes when the last event triggered a read and the last
//! read equals what is on disk at the end.

use crate::util::parse_nfd;
use inotify::{Inotify, WatchMask};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One re-read of the directory.
#[derive(Debug, Clone)]
pub struct Read {
    pub at: Instant,
    /// Non-dot regular files and their content (as NFD would parse them).
    pub files: BTreeMap<String, String>,
}

/// One event on the directory, as fsnotify reports it.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub name: String,
    /// It sent a notification (and so caused a read); otherwise the limit dropped it.
    pub triggered: bool,
}

pub struct NfdModel {
    reads: Arc<Mutex<Vec<Read>>>,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// When NFD's ticker started (`time.NewTicker` at the watcher's start).
    ticker_start: Instant,
}

/// `getFeaturesFromFiles`: every non-dot regular file, parsed.
fn read_dir(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(content) = fs::read_to_string(e.path()) {
            // NFD would log and skip a file it cannot parse; coral-nfd never writes one.
            parse_nfd(&content).unwrap_or_else(|err| panic!("{name}: {err}\n{content}"));
            files.insert(name, content);
        }
    }
    files
}

impl NfdModel {
    /// Starts watching `dir` (which must exist, as NFD's hostPath does) with the ticker
    /// running from now.
    pub fn start(dir: &Path) -> NfdModel {
        let inotify = Inotify::init().unwrap();
        let mask = WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::MODIFY
            | WatchMask::DELETE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ATTRIB;
        inotify.watches().add(dir, mask).unwrap();
        let reads = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, e, s, dir): (_, _, _, PathBuf) =
            (reads.clone(), events.clone(), stop.clone(), dir.into());
        let ticker_start = Instant::now();
        let thread = std::thread::spawn(move || run(inotify, &dir, ticker_start, &r, &e, &s));
        NfdModel {
            reads,
            events,
            stop,
            thread: Some(thread),
            ticker_start,
        }
    }

    /// Which of NFD's one-second ticks `at` falls in.
    pub fn tick_of(&self, at: Instant) -> u128 {
        at.duration_since(self.ticker_start).as_millis() / 1000
    }

    pub fn reads(&self) -> Vec<Read> {
        self.reads.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Events the rate limit dropped so far.
    pub fn dropped(&self) -> usize {
        self.events().iter().filter(|e| !e.triggered).count()
    }

    /// Asserts that NFD saw `content` as `name` for sure: the last event triggered a read,
    /// and the last read found exactly this.
    pub fn assert_saw(&self, name: &str, content: &str) {
        let events = self.events();
        let last = events.last().expect("no event at all");
        assert!(
            last.triggered,
            "NFD dropped the last event ({:?}): it may keep an older version; events (ms, \
             name, triggered): {:?}",
            last.name,
            events
                .iter()
                .map(|e| (
                    e.at.duration_since(events[0].at).as_millis(),
                    &e.name,
                    e.triggered
                ))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            self.last_seen(name).as_deref(),
            Some(content),
            "NFD's last read is not the file on disk"
        );
    }

    /// What the last read saw of `name` (`None`: no read yet, or the file was absent).
    pub fn last_seen(&self, name: &str) -> Option<String> {
        self.reads
            .lock()
            .unwrap()
            .last()
            .and_then(|r| r.files.get(name).cloned())
    }
}

impl Drop for NfdModel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut inotify: Inotify,
    dir: &Path,
    ticker_start: Instant,
    reads: &Mutex<Vec<Read>>,
    log: &Mutex<Vec<Event>>,
    stop: &AtomicBool,
) {
    // Events are stamped when this thread gets to them. On a loaded machine (CI runs the
    // suite in parallel on two cores) a stall of this thread would put two events that
    // came 1.1 s apart into one tick and blame the writer for a drop it did not cause:
    // so this thread runs at the highest priority it may have (nice -20 needs root, as
    // CI is; elsewhere it stays as it was).
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), -20);
    // The tick during which `limit` was set; a later tick has cleared it.
    let mut limited_in: Option<u128> = None;
    let mut buf = [0u8; 8192];
    while !stop.load(Ordering::Relaxed) {
        let names: Vec<String> = match inotify.read_events(&mut buf) {
            Ok(events) => events
                .map(|e| {
                    e.name
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("inotify: {e}"),
        };
        if names.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for name in names {
            let now = Instant::now();
            let tick = now.duration_since(ticker_start).as_millis() / 1000;
            let triggered = limited_in != Some(tick);
            log.lock().unwrap().push(Event {
                at: now,
                name,
                triggered,
            });
            if triggered {
                limited_in = Some(tick);
                let files = read_dir(dir);
                reads.lock().unwrap().push(Read { at: now, files });
            }
        }
    }
}
