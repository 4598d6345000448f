//! Faults on the output path: read-only directory, a parent that cannot be created, an
//! output path that is a directory, a full disk in the middle of a write, a refused
//! rename. One-shot mode exits 1, daemon mode logs and retries; the previous file is
//! byte-for-byte intact and no temporary file is left behind, even after 1000 failures.
//! Needs root (mount, chattr); where that is refused the test says so loudly.

use crate::bed::{PATIENCE, staging};
use crate::util::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            refused("mount a tmpfs");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

fn refused(what: &str) {
    let msg = format!("\n*** cannot {what} here (run the tests as root): fault test NOT run ***\n");
    if std::env::var_os("CORAL_NFD_ALLOW_NO_MKNOD").is_some() {
        eprintln!("{msg}");
    } else {
        panic!("{msg}Set CORAL_NFD_ALLOW_NO_MKNOD=1 to skip knowingly.");
    }
}

/// A sysfs tree whose feature file is about 20 KB: 80 class devices.
fn big_tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for n in 0..80 {
        let d = t.path().join(format!("sys/devices/virtual/apex/apex_{n}"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("dev"), format!("120:{n}\n")).unwrap();
        fs::write(d.join("status"), "ALIVE\n").unwrap();
        fs::create_dir_all(t.path().join("sys/class/apex")).unwrap();
        std::os::unix::fs::symlink(
            format!("../../devices/virtual/apex/apex_{n}"),
            t.path().join(format!("sys/class/apex/apex_{n}")),
        )
        .unwrap();
    }
    fs::create_dir_all(t.path().join("sys/bus/pci/drivers/apex")).unwrap();
    fs::create_dir_all(t.path().join("sys/bus/pci/devices")).unwrap();
    fs::create_dir_all(t.path().join("dev")).unwrap();
    t
}

/// The (empty) dev root beside a [`big_tree`]'s sysfs root.
fn dev_of(sys: &Path) -> String {
    sys.with_file_name("dev").to_str().unwrap().to_string()
}

fn one_shot(sys: &Path, out: &Path) -> std::process::Output {
    run(&[
        "--sysfs-root",
        sys.to_str().unwrap(),
        "--dev-root",
        &dev_of(sys),
        "--output-file",
        out.to_str().unwrap(),
    ])
}

/// No temporary file anywhere near the output (the staging directory may exist).
fn no_temporaries(out: &Path) {
    if let Ok(entries) = fs::read_dir(staging(out)) {
        let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
    let Ok(entries) = fs::read_dir(out.parent().unwrap()) else {
        return; // the parent was never created: nothing can be left in it
    };
    for e in entries {
        let name = e.unwrap().file_name();
        assert!(
            !name.to_string_lossy().contains(".tmp") || staging(out).file_name() == Some(&name),
            "{name:?}"
        );
    }
}

fn fails_cleanly(o: &std::process::Output, out: &Path, old: &[u8], why: &str) {
    assert_eq!(o.status.code(), Some(1), "{why}: {}", stderr(o));
    let err = stderr(o);
    assert!(err.contains("coral-nfd: error:"), "{why}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    if out.is_file() {
        assert_eq!(fs::read(out).unwrap(), old, "{why}: previous file changed");
    }
    no_temporaries(out);
}

/// A daemon writing `out` every `interval`, and a live count of the retries it logs.
struct Daemon {
    child: std::process::Child,
    retries: std::sync::Arc<AtomicUsize>,
    /// Lines saying the staging directory was locked again: none of these faults
    /// removes it, so each would be a false alarm (and a lock let go meanwhile).
    relocked: std::sync::Arc<AtomicUsize>,
    reader: std::thread::JoinHandle<()>,
}

impl Daemon {
    fn start(sys: &Path, out: &Path, interval: &str) -> Daemon {
        let mut child = Command::new(bin())
            .args([
                "--sysfs-root",
                sys.to_str().unwrap(),
                "--dev-root",
                &dev_of(sys),
            ])
            .args([
                "--output-file",
                out.to_str().unwrap(),
                "--sleep-interval",
                interval,
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let retries = std::sync::Arc::new(AtomicUsize::new(0));
        let relocked = std::sync::Arc::new(AtomicUsize::new(0));
        let (counter, relocks) = (retries.clone(), relocked.clone());
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains("coral-nfd: error:") && line.contains("retrying") {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if line.contains("locked it again") {
                    relocks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Daemon {
            child,
            retries,
            relocked,
            reader,
        }
    }

    fn retries(&self) -> usize {
        self.retries.load(Ordering::Relaxed)
    }

    /// SIGTERM; it must exit 0. Returns the retries it logged.
    fn stop(mut self) -> usize {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the daemon keeps running"
        );
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        assert!(self.child.wait().unwrap().success());
        self.reader.join().unwrap();
        assert_eq!(
            self.relocked.load(Ordering::Relaxed),
            0,
            "said the staging directory was locked again, but nobody removed it"
        );
        self.retries.load(Ordering::Relaxed)
    }
}

/// The daemon on the same fault: it keeps running, says what failed and that it will
/// retry, at every tick, and leaves the previous file and no temporary behind.
fn daemon_retries(sys: &Path, out: &Path, old: &[u8], why: &str) {
    // The shortest interval there is: 1 s.
    let d = Daemon::start(sys, out, "1s");
    let start = Instant::now();
    while d.retries() < 3 {
        assert!(start.elapsed() < PATIENCE, "{why}: {} retries", d.retries());
        std::thread::sleep(Duration::from_millis(50));
    }
    let retries = d.stop();
    assert!(retries >= 3, "{why}: only {retries} logged retries");
    if out.is_file() {
        assert_eq!(fs::read(out).unwrap(), old, "{why}: previous file changed");
    }
    no_temporaries(out);
}

#[test]
fn read_only_directory() {
    let tree = big_tree();
    let sys = tree.path().join("sys");
    let Some(fs_) = Tmpfs::mount("1m") else {
        return;
    };
    let out = fs_.path().join("features.d/coral-nfd");
    assert_eq!(one_shot(&sys, &out).status.code(), Some(0));
    let old = fs::read(&out).unwrap();
    fs_.remount("ro");
    fails_cleanly(&one_shot(&sys, &out), &out, &old, "read-only directory");
    daemon_retries(&sys, &out, &old, "read-only directory");
    // A parent that cannot be created (it would be on the read-only filesystem).
    let deeper = fs_.path().join("new/dir/coral-nfd");
    fails_cleanly(&one_shot(&sys, &deeper), &deeper, b"", "uncreatable parent");
    daemon_retries(&sys, &deeper, b"", "uncreatable parent");
    assert!(stderr(&one_shot(&sys, &deeper)).contains("cannot create directory"));
}

#[test]
fn output_path_is_a_directory() {
    let tree = big_tree();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("coral-nfd");
    fs::create_dir_all(out.join("keep")).unwrap();
    fs::write(out.join("keep/mine"), "user data").unwrap();
    fails_cleanly(
        &one_shot(&tree.path().join("sys"), &out),
        &out,
        b"",
        "output is a directory",
    );
    assert_eq!(
        fs::read_to_string(out.join("keep/mine")).unwrap(),
        "user data"
    );
}

/// Fills a filesystem until fewer than `leave` bytes are free.
fn fill(dir: &Path, leave: u64) {
    let mut f = fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    loop {
        let st = rustix::fs::statvfs(dir).unwrap();
        if st.f_bavail * st.f_frsize < leave + 4096 {
            break;
        }
        if std::io::Write::write_all(&mut f, &block).is_err() {
            break;
        }
    }
    f.sync_all().unwrap();
}

#[test]
fn disk_full_in_the_middle_of_a_write() {
    let tree = big_tree();
    let sys = tree.path().join("sys");
    let Some(fs_) = Tmpfs::mount("256k") else {
        return;
    };
    let out = fs_.path().join("coral-nfd");
    fs::write(
        &out,
        "# the previous file\nfeature.node.kubernetes.io/coral-tpu.present=true\n",
    )
    .unwrap();
    let old = fs::read(&out).unwrap();
    // Room for one page of the ~20 KB file: the write starts, then runs out.
    fill(fs_.path(), 4096);
    fails_cleanly(&one_shot(&sys, &out), &out, &old, "disk full");
    let err = stderr(&one_shot(&sys, &out));
    assert!(err.contains("No space left on device"), "{err}");
    // The temporary file is named once (not again by the temporary-file library).
    let tmp = err
        .split_whitespace()
        .find(|w| w.contains("/write-"))
        .unwrap_or_else(|| panic!("no temporary path in {err}"))
        .trim_end_matches(':');
    assert_eq!(err.matches(tmp).count(), 1, "{err}");

    // A thousand failed writes through the library's own AtomicFile (the daemon cannot
    // try more than once a second): each cleans up after itself.
    {
        let mut f = coral_nfd::output::AtomicFile::new(&out, Duration::ZERO).unwrap();
        let content = "x".repeat(20_000);
        for _ in 0..1000 {
            let e = f.write(&content).unwrap_err();
            assert!(e.contains("No space left on device"), "{e}");
        }
        assert_eq!(fs::read(&out).unwrap(), old);
        no_temporaries(&out);
    }
    // The daemon: failed attempts, one line each, nothing left behind; then room again,
    // and the next attempt succeeds.
    let d = Daemon::start(&sys, &out, "1s");
    let start = Instant::now();
    while d.retries() < 3 {
        assert!(start.elapsed() < PATIENCE, "fewer than 3 attempts");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fs::read(&out).unwrap(),
        old,
        "previous file intact during failures"
    );
    no_temporaries(&out);
    fs::remove_file(fs_.path().join("filler")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while fs::read(&out).unwrap() == old {
        assert!(
            Instant::now() < deadline,
            "daemon did not recover after space came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let errors = d.stop();
    parse_nfd(&fs::read_to_string(&out).unwrap()).unwrap();
    no_temporaries(&out);
    eprintln!("disk full: {errors} failed daemon writes, then recovery; no temporary file left");
}

#[test]
fn rename_refused() {
    let tree = big_tree();
    let sys = tree.path().join("sys");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = dir.path().join("coral-nfd");
    assert_eq!(one_shot(&sys, &out).status.code(), Some(0));
    let old = fs::read(&out).unwrap();
    // An immutable file cannot be replaced, even by root.
    let ok = Command::new("chattr")
        .arg("+i")
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        refused("chattr +i (needs root and ext2/3/4, xfs or btrfs)");
        return;
    }
    let o = one_shot(&sys, &out);
    daemon_retries(&sys, &out, &old, "rename refused");
    let _ = Command::new("chattr").arg("-i").arg(&out).status();
    fails_cleanly(&o, &out, &old, "rename refused");
    assert!(stderr(&o).contains("cannot rename"), "{}", stderr(&o));
}

/// A snapshot that stops half-way (the disk ran out of inodes) is still known as one:
/// `--force` replaces it once there is room, where it would refuse someone's files.
#[test]
fn a_half_written_snapshot_can_be_replaced() {
    let Some(dev) = fixture_dev_root("pcie-ready") else {
        return;
    };
    let sys = fixtures_dir().join("pcie-ready/sys");
    let Some(fs_) = Tmpfs::mount("1m,nr_inodes=40") else {
        return;
    };
    let out = fs_.path().join("snap");
    let snap = |extra: &[&str]| take_snapshot(&sys, dev.path(), &out, extra);
    let o = snap(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    assert!(out.join("sys").is_dir(), "stopped before writing anything");
    fs_.remount("nr_inodes=100000");
    let o = snap(&["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let manifest = fs::read_to_string(out.join("dev.manifest")).unwrap();
    assert!(manifest.contains(" apex_0\n"), "{manifest}");
}
