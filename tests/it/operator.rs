//! What an operator meets: an output path that is not ours, two daemons on one file, a
//! deleted file, roots that vanish, and what the daemon says in its log.

use crate::bed::*;
use crate::util::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn bed() -> Option<Bed> {
    Bed::new("pcie-ready")
}

#[test]
fn only_a_regular_file_or_nothing_is_replaced() {
    let Some(b) = bed() else { return };
    let dir = b.dir().join("targets");
    fs::create_dir(&dir).unwrap();
    let chr = dir.join("null");
    mknod(&chr, 'c', 1, 3, 0o666).unwrap();
    let fifo = dir.join("fifo");
    mknod(&fifo, 'p', 0, 0, 0o644).unwrap();
    let precious = b.dir().join("precious");
    fs::write(&precious, "keep me\n").unwrap();
    let link = dir.join("link");
    symlink(&precious, &link).unwrap();
    let subdir = dir.join("subdir");
    fs::create_dir(&subdir).unwrap();
    for (target, kind) in [
        (&chr, "a character device"),
        (&fifo, "a FIFO"),
        (&link, "a symbolic link"),
        (&subdir, "a directory"),
    ] {
        let before: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        for extra in [&[][..], &["--sleep-interval", "1h"][..]] {
            let mut args = b.args(&["--output-file", target.to_str().unwrap()]);
            args.extend(extra.iter().map(|s| s.to_string()));
            let o = run_with_limit(
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
                Duration::from_secs(10),
            );
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{kind} {extra:?}: {err}");
            assert!(
                err.contains(kind) && err.contains(target.to_str().unwrap()),
                "{err}"
            );
            let after: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(before, after, "{kind}: something was created or removed");
        }
    }
    assert!(
        fs::symlink_metadata(&chr)
            .unwrap()
            .file_type()
            .is_char_device_like()
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // `/` and `x/..` name no file: refused, and nothing appears in the working directory.
    let cwd = tempfile::tempdir().unwrap();
    for p in ["/", "sub/.."] {
        let o = std::process::Command::new(bin())
            .current_dir(cwd.path())
            .args(b.args(&["--output-file", p]))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{p}: {}", stderr(&o));
        assert!(stderr(&o).contains("names a directory"), "{}", stderr(&o));
        assert_eq!(fs::read_dir(cwd.path()).unwrap().count(), 0, "{p}");
    }
}

trait CharLike {
    fn is_char_device_like(&self) -> bool;
}

impl CharLike for fs::FileType {
    fn is_char_device_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_char_device(self)
    }
}

#[test]
fn dash_is_stdout_and_a_daemon_can_print_there() {
    let Some(b) = bed() else { return };
    let o = b.run(&b.args(&["--output-file", "-", "--expiry", "1h"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("# +expiry-time="), "{text}");
    assert!(text.contains("coral-tpu.apex_0.ready=true"));
    assert!(!Path::new("-").exists());

    // An hour's expiry: no refresh (a third version) however slow the machine is.
    let mut child = std::process::Command::new(bin())
        .args(b.args(&[
            "--output-file",
            "-",
            "--sleep-interval",
            "1s",
            "--expiry",
            "1h",
        ]))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read as it comes, and act on what has been printed rather than after fixed sleeps
    // (which a loaded machine outruns).
    let (tx, rx) = std::sync::mpsc::channel();
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    let mut until = |want: &str| {
        let start = Instant::now();
        while !text.contains(want) {
            let left = PATIENCE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(chunk) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
                Err(e) => panic!("{want:?} not printed ({e}):\n{text}"),
            }
        }
    };
    until("coral-tpu.apex_0.ready=true\n");
    b.set_apex_node(false);
    until("coral-tpu.apex_0.ready=false\n");
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, PATIENCE).success());
    reader.join().unwrap();
    text.extend(rx.try_iter().map(|c| String::from_utf8(c).unwrap()));
    // Both versions, each a whole file with its expiry line.
    assert_eq!(text.matches("# coral-nfd ").count(), 2, "{text}");
    assert_eq!(text.matches("# +expiry-time=").count(), 2, "{text}");
    assert!(text.contains("apex_0.ready=true") && text.contains("apex_0.ready=false"));
}

#[test]
fn long_names_and_failed_writes_leave_nothing_behind() {
    let Some(b) = bed() else { return };
    for len in [240, 241, 250, 255] {
        let out = b.dir().join(format!("long/{}", "n".repeat(len)));
        let o = b.run(&b.args(&["--output-file", out.to_str().unwrap()]));
        assert_eq!(o.status.code(), Some(0), "{len}: {}", stderr(&o));
        assert!(ready_in(&read(&out)) == Some(true), "{len}");
        assert!(staging(&out).is_dir(), "{len}: staging kept after a write");
    }
    // A write that fails where this run made the staging directory: nothing stays.
    let parent = b.dir().join("ro");
    fs::create_dir(&parent).unwrap();
    let out = parent.join("coral-nfd");
    fs::write(&out, "old\n").unwrap();
    // An immutable file cannot be replaced: the rename fails after staging was made.
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if immutable {
        let o = b.run(&b.args(&["--output-file", out.to_str().unwrap()]));
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&out)
            .status();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(fs::read_to_string(&out).unwrap(), "old\n");
        let left: Vec<_> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["coral-nfd"], "staging directory left behind");
    } else {
        eprintln!("*** chattr +i refused here: the failed-write part did not run ***");
    }
}

#[test]
fn a_deleted_or_changed_file_is_restored_and_sighup_always_rewrites() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1s", "--expiry", "0"]);
    let original = read(&out);
    fs::remove_file(&out).unwrap();
    wait_for("restored after deletion", PATIENCE, || {
        read(&out) == original
    });
    fs::write(&out, "someone else's\n").unwrap();
    wait_for("restored after a change", PATIENCE, || {
        read(&out) == original
    });
    // SIGHUP rewrites even when nothing changed: a new inode.
    std::thread::sleep(Duration::from_millis(1200));
    let ino = fs::metadata(&out).unwrap().ino();
    signal(&child, rustix::process::Signal::HUP);
    wait_for("rewrite on SIGHUP", PATIENCE, || {
        fs::metadata(&out).is_ok_and(|m| m.ino() != ino)
    });
    let log = stop_and_log(child);
    assert!(
        log.contains("was removed or changed by someone else"),
        "{log}"
    );
}

#[test]
fn a_second_daemon_on_the_same_file_is_refused() {
    let Some(b) = bed() else { return };
    let first = b.daemon(&["--sleep-interval", "1h"]);
    let o = b.run(&b.file_args(&["--sleep-interval", "1h"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is taken"), "{}", stderr(&o));
    // One-shot runs are refused too: they would fight the daemon as well.
    let o = b.run(&b.file_args(&[]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // A holder killed with SIGKILL does not block the next one.
    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    let second = b.daemon(&["--sleep-interval", "1h"]);
    stop_daemon(second);
}

#[test]
fn vanished_roots_are_warned_about_and_picked_up_again() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1s"]);
    wait_for("first version", PATIENCE, || {
        ready_in(&read(&out)) == Some(true)
    });
    let before = read(&out);
    // The sysfs tree goes away: the file is kept as it was, a warning says why.
    let away = b.dir().join("sys-away");
    fs::rename(&b.sys, &away).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(read(&out), before, "labels of nothing were written");
    // It comes back, now with the TPU LAMED: picked up at the next tick.
    let status = away.join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0/status");
    fs::write(&status, "LAMED\n").unwrap();
    fs::rename(&away, &b.sys).unwrap();
    wait_for("scan after return", PATIENCE, || {
        ready_in(&read(&out)) == Some(false)
    });

    // The dev root is deleted and made again: hotplug watches the new one.
    let status = b
        .sys
        .join("devices/pci0000:00/0000:00:1c.4/0000:03:00.0/apex/apex_0/status");
    fs::write(&status, "ALIVE\n").unwrap();
    fs::remove_dir_all(&b.dev).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    fs::create_dir(&b.dev).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    b.set_apex_node(true);
    wait_for("node in the new dev root", PATIENCE, || {
        ready_in(&read(&out)) == Some(true)
    });
    eprintln!("new dev root: node seen after {:?}", start.elapsed());
    let log = stop_and_log(child);
    assert!(log.contains("keeping the last file"), "{log}");
    assert!(log.contains(b.sys.to_str().unwrap()), "{log}");
    assert!(log.contains("the roots are back"), "{log}");
}

/// An RFC 3339 UTC timestamp with milliseconds at the start of the line.
fn stamped(line: &str) -> bool {
    line.split(' ')
        .next()
        .is_some_and(|t| humantime::parse_rfc3339(t).is_ok() && t.ends_with('Z'))
}

#[test]
fn the_daemon_says_what_it_does() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1s"]);
    wait_for("first version", PATIENCE, || {
        ready_in(&read(&out)) == Some(true)
    });
    std::thread::sleep(Duration::from_millis(2500)); // unchanged ticks: silent
    b.set_apex_node(false);
    wait_for("change", PATIENCE, || ready_in(&read(&out)) == Some(false));
    let log = stop_and_log(child);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().all(|l| stamped(l)), "{log}");
    assert!(lines[0].contains("started"), "{log}");
    for word in [
        env!("CARGO_PKG_VERSION"),
        b.sys.to_str().unwrap(),
        b.dev.to_str().unwrap(),
        out.to_str().unwrap(),
        "interval 1s",
        "expiry 7s",
    ] {
        assert!(lines[0].contains(word), "{word} not in {}", lines[0]);
    }
    let changed: Vec<&&str> = lines.iter().filter(|l| l.contains("wrote")).collect();
    assert_eq!(changed.len(), 2, "one line per written change:\n{log}");
    assert!(
        changed[1].contains("coral-tpu.apex_0.ready true -> false (node-missing)")
            && changed[1].contains("coral-tpu.ready.count 1 -> 0"),
        "{log}"
    );
    assert!(lines.last().unwrap().contains("stopped"), "{log}");
    assert_eq!(lines.len(), 4, "nothing on unchanged ticks:\n{log}");

    // The same as JSON lines.
    let child = b.daemon(&["--sleep-interval", "1s", "--log-format", "json"]);
    b.set_apex_node(true);
    wait_for("change", PATIENCE, || ready_in(&read(&out)) == Some(true));
    let log = stop_and_log(child);
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(humantime::parse_rfc3339(v["time"].as_str().unwrap()).is_ok());
        assert!(["info", "warning", "error"].contains(&v["level"].as_str().unwrap()));
        assert!(v["msg"].is_string());
    }
    assert!(
        log.contains("true -> false") || log.contains("false -> true"),
        "{log}"
    );
}

/// The lock lives on the staging directory: removing that directory must not let a
/// second writer in. The first notices at once and locks the new one; a directory put
/// there by another holder ends the first (exit 1), so two never take turns.
#[test]
fn a_removed_staging_directory_does_not_let_a_second_writer_in() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let dir = staging(&out);
    let mut first = b.daemon(&["--sleep-interval", "1h"]);
    fs::remove_dir_all(&dir).unwrap();
    // The daemon makes it again and locks it; seen in /proc/locks, since probing with a
    // lock of our own could look to the daemon like another holder.
    wait_for("the staging directory locked again", PATIENCE, || {
        flocked(&dir)
    });
    // Another writer (a one-shot run takes the lock as a daemon does) is refused.
    let second = b.run(&b.file_args(&[]));
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(stderr(&second).contains("is taken"), "{}", stderr(&second));
    assert!(dir.is_dir(), "the staging directory was made again");
    // Still the writer: SIGHUP rewrites.
    let before = fs::metadata(&out).unwrap().ino();
    signal(&first, rustix::process::Signal::HUP);
    wait_for("rewrite on SIGHUP", PATIENCE, || {
        fs::metadata(&out).is_ok_and(|m| m.ino() != before)
    });
    // Another holder's directory renamed into place: the first stops, naming it.
    another_holder_takes(&dir, &mut first);
}

/// Whether some process holds a flock on `dir` (by its inode, in /proc/locks).
fn flocked(dir: &Path) -> bool {
    let Ok(meta) = fs::metadata(dir) else {
        return false;
    };
    let inode = format!(":{}", meta.ino());
    fs::read_to_string("/proc/locks").unwrap().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK") && f.get(5).is_some_and(|id| id.ends_with(&inode))
    })
}

/// Puts a directory that another process holds locked at `dir` (the staging
/// directory), and checks that the daemon `first` ends for it: exit 1, "lost the lock".
fn another_holder_takes(dir: &std::path::Path, first: &mut std::process::Child) {
    let other = dir.with_file_name(".other");
    fs::create_dir(&other).unwrap();
    let held = fs::File::open(&other).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    // What the daemon made there meanwhile goes; a rename over an empty one would do too.
    let _ = fs::remove_dir_all(dir);
    fs::rename(&other, dir).unwrap();
    let status = wait_exit(first, PATIENCE);
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(first);
    assert!(err.contains("lost the lock"), "{err}");
    drop(held);
}

/// The directory holding the file renamed away and made again: the daemon watches the
/// path, not the directory it first saw, so a lock taken there later is still noticed.
#[test]
fn a_moved_output_directory_is_still_watched() {
    let Some(b) = bed() else { return };
    let out = b.out();
    let dir = staging(&out);
    let parent = out.parent().unwrap().to_path_buf();
    let mut first = b.daemon(&["--sleep-interval", "1h"]);
    fs::rename(&parent, b.dir().join("features.d.old")).unwrap();
    wait_for("the staging directory made again", PATIENCE, || {
        dir.is_dir()
    });
    std::thread::sleep(Duration::from_millis(300));
    // Another holder's directory put in place of the new one: the first stops.
    another_holder_takes(&dir, &mut first);
}

/// `--output-file -` read by `head -1`: when the reader goes, the daemon ends (a closed
/// pipe never comes back) with a last line saying why, instead of retrying forever.
#[test]
fn a_daemon_on_stdout_ends_when_its_reader_goes() {
    let Some(b) = bed() else { return };
    let mut child = std::process::Command::new(bin())
        .args(b.args(&["--output-file", "-", "--sleep-interval", "1s"]))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    // The next write (SIGHUP forces one) meets the closed pipe.
    signal(&child, rustix::process::Signal::HUP);
    let status = wait_exit(&mut child, PATIENCE);
    assert_eq!(status.code(), Some(1));
    let err = stderr_of(&mut child);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("Broken pipe") && last.contains("stopping"),
        "{err}"
    );
    assert_eq!(err.matches("Broken pipe").count(), 1, "{err}");
}

/// Changes only in raw features (a USB stick loading its firmware: mode and node) and
/// SIGHUP rewrites get a log line each, in the same format as label changes.
#[test]
fn raw_feature_changes_and_sighup_rewrites_are_logged() {
    let Some(b) = Bed::new("usb-dfu-usb3") else {
        return;
    };
    let out = b.out();
    let child = b.daemon(&["--sleep-interval", "1h", "--write-gap", "0s"]);
    let stick = fs::read_dir(b.sys.join("bus/usb/devices"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_to_string(p.join("idVendor")).is_ok_and(|v| v.trim() == "1a6e"))
        .unwrap();
    let stick = fs::canonicalize(stick).unwrap();
    // Firmware loaded: the stick shows 18d1:9302 with the same node (a real one would
    // also renumber; the node must exist for readiness to stay the same).
    fs::write(stick.join("idVendor"), "18d1\n").unwrap();
    fs::write(stick.join("idProduct"), "9302\n").unwrap();
    let before = read(&out);
    signal(&child, rustix::process::Signal::HUP);
    wait_for("the app-mode file", PATIENCE, || {
        read(&out).contains("usb.0.mode=app")
    });
    assert_eq!(
        before
            .replace("usb.0.mode=dfu", "usb.0.mode=app")
            .lines()
            .skip(2)
            .collect::<Vec<_>>(),
        read(&out).lines().skip(2).collect::<Vec<_>>(),
        "only the raw mode changed"
    );
    std::thread::sleep(Duration::from_millis(200));
    let ino = fs::metadata(&out).unwrap().ino();
    signal(&child, rustix::process::Signal::HUP);
    wait_for("the SIGHUP rewrite", PATIENCE, || {
        fs::metadata(&out).is_ok_and(|m| m.ino() != ino)
    });
    let log = stop_and_log(child);
    assert!(log.contains("coral-tpu.usb.0.mode dfu -> app"), "{log}");
    assert!(log.contains("again (SIGHUP): no change"), "{log}");
}
