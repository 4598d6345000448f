//! Hotplug: in daemon mode, watch the dev root with inotify and ask for a rescan when
//! a Coral node appears or goes (`apex_*`, anything under `bus/usb/`). sysfs sends no
//! inotify events, so this rides on devtmpfs (where the kernel creates the nodes); the
//! periodic rescan stays as the fallback for everything else. Also the one entry of
//! the output's directory whose removal would take the daemon's lock with it
//! ([`watch_entry`]).

use crate::events::Event;
use crate::log;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Events that arrive within this window after the first one give one rescan: a USB
/// stick re-enumerating removes one node and creates another within milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// Which watched directory an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dir {
    /// The dev root: `apex_N` nodes, and `bus` appearing.
    Root,
    /// `bus`: `usb` appearing.
    Bus,
    /// `bus/usb`: where bus directories (`001`...) come and go.
    UsbBuses,
    /// One `bus/usb/NNN`: where a bus's device nodes come and go.
    UsbNodes,
}

/// What an event calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Ignore,
    Rescan,
    /// Directories came or went: watch what exists now, then rescan.
    RewatchAndRescan,
}

/// Pure decision for one event (`dir` is `None` for an event without a watch, such as
/// a queue overflow).
pub fn classify(dir: Option<&Dir>, name: Option<&OsStr>, mask: EventMask) -> Action {
    if mask.contains(EventMask::Q_OVERFLOW) {
        // Events were lost: whatever happened, look again at everything.
        return Action::RewatchAndRescan;
    }
    if mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
        return Action::RewatchAndRescan;
    }
    let name = name.map(OsStr::as_bytes).unwrap_or_default();
    let is_dir = mask.contains(EventMask::ISDIR);
    match dir {
        None => Action::Ignore,
        Some(Dir::Root) if name.starts_with(b"apex") => Action::Rescan,
        Some(Dir::Root) if name == b"bus" && is_dir => Action::RewatchAndRescan,
        Some(Dir::Bus) if name == b"usb" && is_dir => Action::RewatchAndRescan,
        Some(Dir::UsbBuses) if is_dir => Action::RewatchAndRescan,
        Some(Dir::UsbBuses) => Action::Rescan,
        Some(Dir::UsbNodes) => Action::Rescan,
        Some(_) => Action::Ignore,
    }
}

/// How often a vanished dev root is looked for.
const ROOT_RETRY: Duration = Duration::from_secs(1);

struct Watcher {
    inotify: Inotify,
    root: PathBuf,
    dirs: HashMap<WatchDescriptor, Dir>,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

impl Watcher {
    fn root_watched(&self) -> bool {
        self.dirs.values().any(|d| *d == Dir::Root)
    }

    /// Watches every directory of interest that exists now. Each directory is watched
    /// before it is listed (and a parent before its child is tried): an entry made after
    /// the listing then still gives an event, where listing first would leave a window
    /// in which a new bus directory is neither listed nor reported.
    fn rewatch(&mut self) {
        let usb = self.root.join("bus/usb");
        for (path, dir) in [
            (self.root.clone(), Dir::Root),
            (self.root.join("bus"), Dir::Bus),
            (usb.clone(), Dir::UsbBuses),
        ] {
            self.watch(&path, dir);
        }
        if let Ok(entries) = std::fs::read_dir(&usb) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.watch(&e.path(), Dir::UsbNodes);
                }
            }
        }
    }

    fn watch(&mut self, path: &Path, dir: Dir) {
        // Adding a watch on an inode already watched returns the same descriptor.
        if let Ok(wd) = self.inotify.watches().add(path, mask()) {
            self.dirs.insert(wd, dir);
        }
    }

    fn handle<'a>(&mut self, events: impl Iterator<Item = inotify::Event<&'a OsStr>>) -> Action {
        let mut action = Action::Ignore;
        for e in events {
            let dir = self.dirs.get(&e.wd);
            action = action.max(classify(dir, e.name, e.mask));
            if e.mask.contains(EventMask::IGNORED) {
                self.dirs.remove(&e.wd);
            }
        }
        action
    }

    fn run(mut self, tx: Sender<Event>) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let action = match self.inotify.read_events_blocking(&mut buf) {
                Ok(events) => {
                    let events: Vec<_> = events.collect();
                    self.handle(events.into_iter())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warning(format_args!(
                        "hotplug watch on {} stopped ({e}); the periodic rescan goes on",
                        self.root.display()
                    ));
                    return;
                }
            };
            if action == Action::Ignore {
                continue;
            }
            std::thread::sleep(DEBOUNCE);
            let mut action = action;
            while let Ok(events) = self.inotify.read_events(&mut buf) {
                let events: Vec<_> = events.collect();
                if events.is_empty() {
                    break;
                }
                action = action.max(self.handle(events.into_iter()));
            }
            if action == Action::RewatchAndRescan {
                self.rewatch();
            }
            if tx.send(Event::Rescan).is_err() {
                return;
            }
            if !self.root_watched() {
                // The dev root itself went away: nothing can be watched until a new one
                // appears at its path, which no watch of ours would report. Look once a
                // second (only while it is gone), then watch it again.
                while !self.root_watched() {
                    std::thread::sleep(ROOT_RETRY);
                    self.rewatch();
                }
                if tx.send(Event::Rescan).is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts watching `dev_root` in a thread that sends [`Event::Rescan`] on changes. The
/// thread blocks in `read`: no wakeups while nothing happens.
pub fn spawn(dev_root: &Path, tx: Sender<Event>) -> io::Result<()> {
    let mut w = Watcher {
        inotify: Inotify::init()?,
        root: dev_root.to_path_buf(),
        dirs: HashMap::new(),
    };
    w.rewatch();
    std::thread::Builder::new()
        .name("hotplug".into())
        .spawn(move || w.run(tx))?;
    Ok(())
}

/// Watches `dir` for `name` being created, removed or renamed (and `dir` itself going
/// away), sending [`Event::Output`] each time: the daemon then checks that the lock it
/// holds on `dir/name` is still on what is at that path. Entries with other names,
/// such as the published file the daemon renames into `dir`, are not reported.
pub fn watch_entry(dir: &Path, name: &OsStr, tx: Sender<Event>) -> io::Result<()> {
    let mut inotify = Inotify::init()?;
    let mask = mask();
    inotify.watches().add(dir, mask)?;
    let (dir, name) = (dir.to_path_buf(), name.to_os_string());
    std::thread::Builder::new()
        .name("output-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let events = match inotify.read_events_blocking(&mut buf) {
                    Ok(events) => events,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut ours = false;
                let mut gone = false;
                let mut moved = Vec::new();
                for e in events {
                    ours |= e.name == Some(name.as_os_str())
                        || e.mask.intersects(
                            EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::Q_OVERFLOW,
                        );
                    gone |= e.mask.contains(EventMask::IGNORED);
                    if e.mask.contains(EventMask::MOVE_SELF) {
                        moved.push(e.wd);
                    }
                }
                // A watch follows the inode: after a rename it watches the directory
                // under its new name, and whatever appears at the path goes unseen.
                for wd in moved {
                    let _ = inotify.watches().remove(wd);
                    gone = true;
                }
                if ours && tx.send(Event::Output).is_err() {
                    return;
                }
                // The directory itself went: watch the path again once it is back (the
                // daemon makes it again at its next write), and have the lock checked
                // once more, as the entry may have come with it.
                if gone {
                    while inotify.watches().add(&dir, mask).is_err() {
                        std::thread::sleep(ROOT_RETRY);
                    }
                    if tx.send(Event::Output).is_err() {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(dir: Option<Dir>, name: &str, mask: EventMask) -> Action {
        classify(dir.as_ref(), Some(OsStr::new(name)), mask)
    }

    #[test]
    fn what_deserves_a_rescan() {
        use Action::*;
        assert_eq!(c(Some(Dir::Root), "apex_0", EventMask::CREATE), Rescan);
        assert_eq!(c(Some(Dir::Root), "apex_1", EventMask::DELETE), Rescan);
        assert_eq!(c(Some(Dir::Root), "ttyS0", EventMask::CREATE), Ignore);
        assert_eq!(
            c(Some(Dir::Root), "bus", EventMask::CREATE | EventMask::ISDIR),
            RewatchAndRescan
        );
        assert_eq!(
            c(Some(Dir::Bus), "usb", EventMask::CREATE | EventMask::ISDIR),
            RewatchAndRescan
        );
        assert_eq!(
            c(Some(Dir::Bus), "pci", EventMask::CREATE | EventMask::ISDIR),
            Ignore
        );
        assert_eq!(
            c(
                Some(Dir::UsbBuses),
                "003",
                EventMask::CREATE | EventMask::ISDIR
            ),
            RewatchAndRescan
        );
        assert_eq!(c(Some(Dir::UsbNodes), "004", EventMask::CREATE), Rescan);
        assert_eq!(
            c(Some(Dir::UsbNodes), "", EventMask::DELETE_SELF),
            RewatchAndRescan
        );
        assert_eq!(
            classify(None, None, EventMask::Q_OVERFLOW),
            RewatchAndRescan
        );
        assert_eq!(c(None, "apex_0", EventMask::CREATE), Ignore);
    }
}
